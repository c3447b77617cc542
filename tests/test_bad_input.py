"""Every bad input gives an error that names the problem, and no run is ever started."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_flowruns.exceptions import FlowRunsConfigError, FlowRunsError
from airflow_flowruns.operators.flow_run import FlowRunOperator
from conftest import Emulator, set_connection
from helpers import RECONCILIATION_FLOW

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
    "timeout in the past": (with_args(timeout=-5), "timeout must be a positive number"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_is_refused_before_any_run(
    case: str, tableflow_conn: str, emulator: Emulator, tmp_path: Path, pdfs: dict[str, Path], mocker
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
    ],
)
def test_bad_connection_starts_nothing(
    conn: dict[str, Any],
    error: type[Exception],
    message: str,
    emulator: Emulator,
    pdfs: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    mocker,
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
