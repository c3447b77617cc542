"""Every bad input gives an error that names the problem, and no run is ever started."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from airflow.providers.common.compat.sdk import Context
from pytest_mock import MockerFixture

from airflow_flowruns.client import HttpOptions
from airflow_flowruns.emulator import EmulatorServer
from airflow_flowruns.emulator import cli as emulator_cli
from airflow_flowruns.emulator.server import NotLoopback
from airflow_flowruns.exceptions import FlowRunsConfigError, FlowRunsError
from airflow_flowruns.operators.flow_run import FlowRunOperator
from airflow_flowruns.platforms.extend.emulator import EXTEND_INVOICE_WORKFLOW
from airflow_flowruns.platforms.noxus.emulator import NOXUS_DOCUMENT_WORKFLOW
from airflow_flowruns.platforms.stackai.emulator import STACKAI_FLOW
from airflow_flowruns.sensors.flow_run import FlowRunSensor
from support.emulator import API_KEY, Emulator, set_connection
from support.runs import RECONCILIATION_FLOW

SMALL_FILE_FLOW = "sm4llFileFlow000"

Case = Callable[[Path, dict[str, Path]], dict[str, Any]]


def files(**overrides: Any) -> Case:
    def make(tmp: Path, pdfs: dict[str, Path]) -> dict[str, Any]:
        base: dict[str, Any] = {"purchase_order": pdfs["po"], "invoice": pdfs["inv"]}
        base.update({k: v(tmp, pdfs) if callable(v) else v for k, v in overrides.items()})
        return {"files": {k: v for k, v in base.items() if v is not None}}

    return make


def empty_file(tmp: Path, _: dict[str, Path]) -> Path:
    (tmp / "empty.pdf").write_bytes(b"")
    return tmp / "empty.pdf"


def text_file(tmp: Path, _: dict[str, Path]) -> Path:
    (tmp / "notes.txt").write_text("not a pdf")
    return tmp / "notes.txt"


def big_file(tmp: Path, _: dict[str, Path]) -> dict[str, Any]:
    big = tmp / "big.pdf"
    big.write_bytes(b"%PDF" + b"0" * (2 * 1024 * 1024))
    return {"flow_id": SMALL_FILE_FLOW, "files": {"document": big}}


def linked_folder(tmp: Path, pdfs: dict[str, Path]) -> str:
    (tmp / "in").mkdir(exist_ok=True)
    (tmp / "in" / "secret.pdf").symlink_to(pdfs["inv"])  # pdfs live outside the folder
    return f"{tmp / 'in'}/"


def linked_glob(tmp: Path, pdfs: dict[str, Path]) -> str:
    return linked_folder(tmp, pdfs) + "*.pdf"


def with_args(**kwargs: Any) -> Case:
    def make(tmp: Path, pdfs: dict[str, Path]) -> dict[str, Any]:
        return {"files": {"purchase_order": pdfs["po"], "invoice": pdfs["inv"]}, **kwargs}

    return make


CASES: dict[str, tuple[Case, str]] = {
    "missing file": (files(invoice="/nowhere/inv.pdf"), "'/nowhere/inv.pdf' does not exist"),
    "empty file": (files(invoice=empty_file), "is empty \\(0 bytes\\)"),
    "directory instead of file": (files(invoice=lambda tmp, _: tmp), "is a directory"),
    "templated path rendered empty": (files(invoice=""), "files\\['invoice'\\] is an empty string"),
    "unknown file field": (files(receipt=lambda _, p: p["a"]), "'receipt'.*does not have as a file field"),
    "missing required field": (files(invoice=None), "requires file field\\(s\\) 'invoice'"),
    "wrong file type": (files(invoice=text_file), "notes.txt.*not of a type.*pdf, image"),
    "oversize file": (big_file, "accepts at most 1048576 bytes"),
    "metadata not JSON": (with_args(metadata="{customer: 1"), "metadata is a string that is not valid JSON"),
    "metadata not serializable": (with_args(metadata={"when": object()}), "metadata cannot be sent as JSON"),
    "metadata not an object": (with_args(metadata=[1, 2]), "metadata must be a JSON object"),
    "file metadata not JSON": (with_args(file_metadata={"invoice": "nope{"}), "file_metadata\\['invoice'\\]"),
    "unknown guidance field": (with_args(file_guidance={"receipt": "x"}), "file_guidance names 'receipt'"),
    "unknown flow": (with_args(flow_id="noSuchFlow000000"), "no active flow 'noSuchFlow000000'"),
    "inactive flow": (with_args(flow_id="in4ctiveFlow0000"), "no active flow 'in4ctiveFlow0000'"),
    "flow id rendered empty": (with_args(flow_id=" "), "flow_id is empty"),
    "metadata with NaN": (
        with_args(metadata={"total": float("nan")}),
        "cannot be sent as JSON.*not JSON compliant",
    ),
    "metadata with Infinity": (with_args(metadata='{"total": Infinity}'), "not valid JSON.*Infinity"),
    "metadata with a repeated key": (with_args(metadata='{"a": 1, "a": 2}'), "key 'a' appears more than once"),
    "metadata keys JSON would merge": (with_args(metadata={1: "a", "1": "b"}), 'two keys both become "1"'),
    "a folder with a link leading out": (files(invoice=linked_folder), "symbolic link.*follow_symlinks=True"),
    "a glob matching a link leading out": (files(invoice=linked_glob), "symbolic link.*follow_symlinks=True"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_is_refused_before_any_run(
    case: str, tableflow_conn: str, emulator: Emulator, tmp_path: Path, pdfs: dict[str, Path], mocker: MockerFixture
) -> None:
    make, message = CASES[case]
    kwargs = {"flow_id": RECONCILIATION_FLOW, **make(tmp_path, pdfs)}
    op = FlowRunOperator(task_id="t", flowruns_conn_id=tableflow_conn, deferrable=False, **kwargs)
    with pytest.raises(FlowRunsConfigError, match=message):
        op.execute({"ti": mocker.MagicMock()})
    assert emulator.runs() == []
    assert not [r for r in emulator.requests() if r["method"] == "POST"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"on_review": "approve"}, "on_review='approve' is not one of 'succeed', 'fail', 'wait'"),
        ({"poll_interval": 0}, "poll_interval must be a positive number"),
        ({"poll_interval": -1}, "poll_interval must be a positive number"),
        ({"poll_interval": 0.001}, "poll_interval must be at least"),
        ({"timeout": -5}, "timeout must be a positive number"),
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"timeout": float("inf")}, "timeout must be a positive number"),
    ],
)
def test_bad_parameters_fail_when_the_dag_is_parsed(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(FlowRunsConfigError, match=message):
        FlowRunOperator(task_id="t", flow_id=RECONCILIATION_FLOW, **kwargs)


@pytest.mark.parametrize(
    ("conn", "error", "message"),
    [
        ({"conn_type": "postgres"}, FlowRunsConfigError, "not a flow-runs platform"),
        ({"password": ""}, FlowRunsConfigError, "no API key"),
        ({"password": "wrong-key"}, FlowRunsError, "HTTP 401.*Check the API key"),
        ({"verify": "/nowhere/ca.pem"}, FlowRunsConfigError, "'tf_bad_conn': extra 'verify' names CA bundle"),
        ({"verify": 3}, FlowRunsConfigError, "'tf_bad_conn': extra 'verify' must be true, false or the path"),
        ({"timeout": "inf"}, FlowRunsConfigError, "'tf_bad_conn': extra 'timeout' must be a positive finite"),
        ({"max_response_bytes": 0}, FlowRunsConfigError, "extra 'max_response_bytes' must be a positive"),
    ],
)
def test_bad_connection_starts_nothing(
    conn: dict[str, Any],
    error: type[Exception],
    message: str,
    emulator: Emulator,
    pdfs: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    mocker: MockerFixture,
) -> None:
    conn_type = conn.pop("conn_type", "tableflow")
    set_connection(monkeypatch, "tf_bad_conn", conn_type, emulator.url, **conn)
    op = FlowRunOperator(
        task_id="t",
        flowruns_conn_id="tf_bad_conn",
        flow_id=RECONCILIATION_FLOW,
        files={"purchase_order": pdfs["po"], "invoice": pdfs["inv"]},
        deferrable=False,
    )
    with pytest.raises(error, match=message):
        op.execute({"ti": mocker.MagicMock()})
    assert emulator.runs() == []


@dataclass(frozen=True)
class PlatformCase:
    """A bad input on one platform: the task's arguments, what the emulator answers, the error expected."""

    platform: str
    kwargs: Callable[[Path], dict[str, Any]]
    message: str
    fault: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def extend_file(**kwargs: Any) -> Callable[[Path], dict[str, Any]]:
    return lambda pdf: {"flow_id": EXTEND_INVOICE_WORKFLOW, "files": {"file": pdf}, **kwargs}


def noxus_file(**kwargs: Any) -> Callable[[Path], dict[str, Any]]:
    return lambda pdf: {"flow_id": NOXUS_DOCUMENT_WORKFLOW, "files": {"document": pdf}, **kwargs}


def tableflow_file(**kwargs: Any) -> Callable[[Path], dict[str, Any]]:
    return lambda pdf: {"flow_id": SMALL_FILE_FLOW, "files": {"document": pdf}, **kwargs}


def html(title: str) -> str:
    return f"<html><head><title>{title}</title></head><body>{title}</body></html>"


PLATFORM_CASES: dict[str, PlatformCase] = {
    "extend: more than 50 files in one package": PlatformCase(
        "extend", lambda pdf: {"flow_id": EXTEND_INVOICE_WORKFLOW, "files": {"file": [pdf] * 51}}, "gives 51.*expand"
    ),
    "extend: a field other than file": PlatformCase(
        "extend", lambda pdf: {"flow_id": EXTEND_INVOICE_WORKFLOW, "files": {"invoice": pdf}}, "not 'invoice'"
    ),
    "extend: oversize metadata": PlatformCase(
        "extend", extend_file(metadata={"notes": "x" * 11_000}), "Extend accepts at most 10240"
    ),
    "extend: an argument it has no place for": PlatformCase(
        "extend", extend_file(file_guidance={"file": "read carefully"}), "take no file_guidance"
    ),
    "extend: unknown workflow": PlatformCase(
        "extend", lambda pdf: {"flow_id": "workflow_nope", "files": {"file": pdf}}, "HTTP 404.*workflow_nope"
    ),
    "extend: 402 usage blocked": PlatformCase(
        "extend",
        extend_file(),
        "HTTP 402.*USAGE_BLOCKED: Credits exhausted",
        fault={
            "path": "/files/upload",
            "status": 402,
            "body": '{"code": "USAGE_BLOCKED", "message": "Credits exhausted", "retryable": false}',
        },
    ),
    "extend: 413 file too large": PlatformCase(
        "extend",
        extend_file(),
        "HTTP 413.*larger than the platform accepts",
        fault={"path": "/files/upload", "status": 413, "body": '{"code": "FILE_TOO_LARGE", "message": "Too big"}'},
    ),
    "extend: malformed JSON": PlatformCase(
        "extend",
        extend_file(),
        "not valid JSON.*host",
        fault={"path": "/files/upload", "status": 200, "body": '{"id": '},
    ),
    "noxus: bad key (401)": PlatformCase("noxus", noxus_file(), "HTTP 401.*Check the API key", extra={"password": "x"}),
    "noxus: HTML page": PlatformCase(
        "noxus",
        noxus_file(),
        "HTML page titled 'Proxy login'",
        fault={"path": "/v1/workflows/", "status": 200, "body": html("Proxy login"), "content_type": "text/html"},
    ),
    "noxus: label in files and inputs": PlatformCase(
        "noxus", noxus_file(inputs={"document": "x"}), "'document' given both in files and in inputs"
    ),
    "noxus: unknown workflow": PlatformCase(
        "noxus", lambda pdf: {"flow_id": "no-such-workflow", "files": {"document": pdf}}, "HTTP 404"
    ),
    "tableflow: forbidden (403)": PlatformCase(
        "tableflow",
        tableflow_file(),
        "HTTP 403.*Key lacks the flows scope",
        fault={"path": "/v2/flows", "method": "GET", "status": 403, "body": '{"detail": "Key lacks the flows scope"}'},
    ),
    "tableflow: 422 with the platform's detail": PlatformCase(
        "tableflow",
        tableflow_file(),
        "HTTP 422.*document: unreadable PDF",
        fault={
            "path": f"/v2/flows/{SMALL_FILE_FLOW}/run",
            "status": 422,
            "body": '{"detail": [{"loc": ["body", "document"], "msg": "unreadable PDF", "type": "value_error"}]}',
        },
    ),
    "tableflow: HTML error page (502)": PlatformCase(
        "tableflow",
        tableflow_file(),
        "HTML page titled '502 Bad Gateway'",
        fault={
            "path": "/v2/flows",
            "method": "GET",
            "status": 502,
            "body": html("502 Bad Gateway"),
            "content_type": "text/html",
            "count": 10,
        },
    ),
    "stackai: no org_id": PlatformCase(
        "stackai", lambda pdf: {"flow_id": STACKAI_FLOW, "files": {"doc-0": pdf}}, "has no org_id"
    ),
}


@pytest.mark.parametrize("case", PLATFORM_CASES, ids=list(PLATFORM_CASES))
def test_bad_input_on_each_platform_starts_nothing(
    case: str, emulator: Emulator, pdf: Path, monkeypatch: pytest.MonkeyPatch, context: Context
) -> None:
    spec = PLATFORM_CASES[case]
    conn_id = set_connection(monkeypatch, f"bad_{spec.platform}", spec.platform, emulator.url, **spec.extra)
    if spec.fault:
        fault = {"count": 5, **spec.fault}
        emulator.fault(fault.pop("path"), fault.pop("status"), fault.pop("body"), **fault)
    op = FlowRunOperator(task_id="t", flowruns_conn_id=conn_id, deferrable=False, **spec.kwargs(pdf))
    with pytest.raises(FlowRunsError, match=spec.message) as err:
        op.execute(context)
    assert API_KEY not in str(err.value)
    assert emulator.runs() == []


@pytest.mark.parametrize(
    ("run_id", "message"),
    [("run_does_not_exist", "HTTP 404.*run_does_not_exist"), ("  ", "run_id is empty")],
)
def test_sensor_on_a_run_that_is_not_there_fails_clearly(
    run_id: str, message: str, tableflow_conn: str, emulator: Emulator, mocker: MockerFixture
) -> None:
    sensor = FlowRunSensor(task_id="s", flowruns_conn_id=tableflow_conn, run_id=run_id, deferrable=False)
    with pytest.raises(FlowRunsError, match=message):
        sensor.execute({"ti": mocker.MagicMock()})
    assert emulator.runs() == []


def test_unknown_status_string_names_it_and_the_known_ones(
    tableflow_conn: str, emulator: Emulator, pdf: Path, mocker: MockerFixture
) -> None:
    op = FlowRunOperator(
        task_id="t",
        flowruns_conn_id=tableflow_conn,
        flow_id=SMALL_FILE_FLOW,
        files={"document": pdf},
        wait_for_completion=False,
        deferrable=False,
    )
    run_id = op.execute({"ti": mocker.MagicMock(try_number=1)})["id"]
    emulator.set_status(run_id, "exploded")
    sensor = FlowRunSensor(task_id="s", flowruns_conn_id=tableflow_conn, run_id=run_id, deferrable=False)
    with pytest.raises(FlowRunsError, match="run status 'exploded'.*does not know.*completed"):
        sensor.execute({"ti": mocker.MagicMock()})
    assert len(emulator.runs()) == 1


def test_a_link_leading_out_is_sent_when_allowed(
    tableflow_conn: str, emulator: Emulator, tmp_path: Path, pdfs: dict[str, Path], context: Context
) -> None:
    op = FlowRunOperator(
        task_id="t",
        flowruns_conn_id=tableflow_conn,
        flow_id=RECONCILIATION_FLOW,
        files={"purchase_order": pdfs["po"], "invoice": linked_folder(tmp_path, pdfs)},
        follow_symlinks=True,
        wait_for_completion=False,
        deferrable=False,
    )
    op.execute(context)
    assert len(emulator.runs()) == 1


def test_verify_false_warns_once_per_connection(caplog: pytest.LogCaptureFixture) -> None:
    for conn_id in ("plain_a", "plain_a", "plain_b"):
        HttpOptions.from_extras({"verify": "false"}, conn_id)
    warnings = [r.getMessage() for r in caplog.records if "verify=false" in r.getMessage()]
    assert len(warnings) == 2
    assert "'plain_a'" in warnings[0] and "'plain_b'" in warnings[1]


@pytest.mark.parametrize(
    ("call", "path", "body"),
    [
        ("post", "/seed", {"platform": "tableflow", "flow_id": RECONCILIATION_FLOW, "count": 10**9}),
        ("post", "/seed", {"platform": "tableflow", "flow_id": RECONCILIATION_FLOW, "count": -1}),
        ("post", "/faults", {"path": "/flows", "status": 200, "count": 0}),
        ("post", "/faults", {"path": "/flows", "status": 1000}),
        ("put", "/rate-limit", {"per_second": -1}),
        ("put", "/fault-mode", {"rate": 0.5, "stall_seconds": 10**9}),
        ("put", f"/tableflow/flows/{RECONCILIATION_FLOW}/scenario", {"processing_seconds": -1}),
    ],
)
def test_emulator_control_refuses_unbounded_values(
    call: str, path: str, body: dict[str, Any], emulator: Emulator
) -> None:
    answer = getattr(emulator.control, call)(path, json=body)
    assert answer.status_code == 422, answer.text
    assert emulator.runs() == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--host", "0.0.0.0"], "--host 0.0.0.0 is not a loopback address; add --allow-remote"),
        (["--rate-limit", "-1"], "--rate-limit -1.0 must be a positive number"),
        (["--fault-rate", "2"], "fault options: rate"),
    ],
)
def test_emulator_cli_refuses_bad_options(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        emulator_cli.main(argv)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "emulator.example.com"])
def test_the_emulator_server_refuses_a_host_beyond_loopback(host: str) -> None:
    """The check is the server's own, so code that serves the emulator without the CLI meets it too."""
    with pytest.raises(NotLoopback, match=f"{re.escape(host)} is not a loopback address; add --allow-remote"):
        EmulatorServer(host=host)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.0.0.2"])
def test_the_emulator_server_serves_loopback_hosts(host: str) -> None:
    with EmulatorServer(host=host) as server:
        assert httpx.get(f"{server.url}/_emulator/runs").status_code == 200
