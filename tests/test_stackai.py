"""StackAI over real HTTP against the emulator: synchronous runs, outputs, the sensor by listing, OAuth."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from airflow_flowruns.emulator.config import (
    STACKAI_BIG_OUTPUT_FLOW,
    STACKAI_FAILING_FLOW,
    STACKAI_FLOW,
    STACKAI_ORG,
)
from airflow_flowruns.exceptions import FlowRunFailedError, FlowRunsApiError, FlowRunsConfigError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.operators.flow_run import FlowRunOperator, task_key
from airflow_flowruns.sensors.flow_run import FlowRunSensor
from conftest import Emulator, set_connection


@pytest.fixture
def stackai_conn(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> str:
    return set_connection(
        monkeypatch, "stackai_test", "stackai", emulator.url, org_id=STACKAI_ORG, flow_id=STACKAI_FLOW
    )


@pytest.fixture
def context(mocker) -> dict[str, Any]:
    return {"ti": mocker.MagicMock(dag_id="d", task_id="t", run_id="r", map_index=-1, try_number=1)}


def task(conn_id: str, pdf: Path, flow: str = STACKAI_FLOW, **kwargs: Any) -> FlowRunOperator:
    args = {"flow_id": flow, "files": {"doc-0": pdf}, "inputs": {"in-0": "Check the renewal clause"}, **kwargs}
    return FlowRunOperator(task_id="t", flowruns_conn_id=conn_id, **args)


def test_synchronous_run_with_files_and_small_outputs(
    stackai_conn: str, emulator: Emulator, pdf: Path, context: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    result = task(stackai_conn, pdf, deferrable=True).execute(context)
    (run,) = emulator.runs()
    assert (result["id"], result["state"], result["status"], result["platform"]) == (
        run["id"],
        "succeeded",
        "COMPLETED",
        "stackai",
    )
    assert run["user_id"] == task_key(context)
    assert run["documents"] == [{"field": "doc-0", "filename": "doc.pdf", "size": pdf.stat().st_size}]
    assert run["inputs"] == {"in-0": "Check the renewal clause"}
    assert result["outputs"]["out-0"].startswith("Reviewed 1 document(s)")
    assert "has no asynchronous runs" in capsys.readouterr().out
    paths = [r["path"] for r in emulator.requests()]
    assert paths[:2] == [
        f"/documents/{STACKAI_ORG}/{STACKAI_FLOW}/doc-0/{task_key(context)}",
        f"/inference/v0/run/{STACKAI_ORG}/{STACKAI_FLOW}",
    ]


def test_large_outputs_go_to_output_path(
    stackai_conn: str, emulator: Emulator, pdf: Path, context: dict[str, Any], tmp_path: Path
) -> None:
    target = tmp_path / "outputs" / "report.json"
    result = task(stackai_conn, pdf, STACKAI_BIG_OUTPUT_FLOW, output_path=f"file://{target}").execute(context)
    assert "outputs" not in result and result["output_path"] == f"file://{target}"
    assert len(json.loads(target.read_text())["out-0"]) > 200_000
    assert len(json.dumps(result)) < 2000


def test_large_outputs_without_output_path_fail_clearly_and_a_retry_reattaches(
    stackai_conn: str, emulator: Emulator, pdf: Path, context: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(FlowRunsConfigError, match="over max_xcom_output_bytes=65536, and no output_path"):
        task(stackai_conn, pdf, STACKAI_BIG_OUTPUT_FLOW).execute(context)
    context["ti"].try_number = 2
    result = task(stackai_conn, pdf, STACKAI_BIG_OUTPUT_FLOW, output_path=f"file://{tmp_path}/o.json").execute(context)
    assert len(emulator.runs()) == 1 and result["id"] == emulator.runs()[0]["id"]


def test_failed_run_fails_the_task_with_its_error(
    stackai_conn: str, emulator: Emulator, pdf: Path, context: dict[str, Any]
) -> None:
    with pytest.raises(FlowRunFailedError, match="LLM node out-0 timed out"):
        task(stackai_conn, pdf, STACKAI_FAILING_FLOW).execute(context)
    assert len(emulator.runs()) == 1, "the 5xx was reconciled through the listing, not repeated"


def seed(emulator: Emulator, count: int, **body: Any) -> list[str]:
    spec = {
        "platform": "stackai",
        "flow_id": STACKAI_FLOW,
        "count": count,
        "created_from": 1.7e9,
        "created_to": 1.7e9 + 86400,
        "scenario": {"processing_seconds": 60},
        **body,
    }
    return emulator.control.post("/seed", json=spec).json()["ids"]


@pytest.mark.parametrize(
    ("raw", "on_review", "outcome"),
    [
        ("COMPLETED", "succeed", "succeeded"),
        ("FAILED", "succeed", "error"),
        ("CANCELLED", "succeed", "error"),
        ("PAUSED", "succeed", "needs_review"),
        ("PAUSED", "fail", "error"),
        ("PAUSED", "wait", None),
        ("RESUMED", "succeed", None),
    ],
)
def test_sensor_follows_a_run_through_the_listing(
    stackai_conn: str, emulator: Emulator, raw: str, on_review: str, outcome: str | None
) -> None:
    ids = seed(emulator, 30)
    emulator.set_status(ids[3], raw, error="Rate limited by the model provider")
    sensor = FlowRunSensor(
        task_id="s",
        flowruns_conn_id=stackai_conn,
        run_id=ids[3],
        flow_id=STACKAI_FLOW,
        on_review=on_review,
        poke_interval=1,
    )
    if outcome == "error":
        with pytest.raises(FlowRunFailedError):
            sensor.poke({})
    elif outcome is None:
        assert sensor.poke({}).is_done is False
    else:
        assert sensor.poke({}).xcom_value["state"] == outcome


def test_sensor_on_an_unknown_run_says_so(stackai_conn: str, emulator: Emulator) -> None:
    seed(emulator, 3)
    sensor = FlowRunSensor(task_id="s", flowruns_conn_id=stackai_conn, run_id="nope", flow_id=STACKAI_FLOW)
    with pytest.raises(FlowRunsApiError, match="no run 'nope' in the flow's run listing"):
        sensor.poke({})


@pytest.mark.parametrize(("count", "pages"), [(0, 1), (1, 1), (100, 2), (150, 2), (250, 3)])
def test_listing_pages_from_zero_until_a_short_page(
    stackai_conn: str, emulator: Emulator, count: int, pages: int
) -> None:
    ids = seed(emulator, count)
    listed = [run.id for run in FlowRunsHook(stackai_conn).list_runs(flow_id=STACKAI_FLOW)]
    assert listed == ids[::-1]
    pages_seen = [r["query"] for r in emulator.requests() if r["path"].startswith("/analytics/")]
    assert len(pages_seen) == pages and "page=0" in pages_seen[0]


def test_listing_filters_by_state_and_date(stackai_conn: str, emulator: Emulator) -> None:
    from datetime import UTC, datetime

    ids = seed(emulator, 24)
    emulator.set_status(ids[5], "FAILED")
    hook = FlowRunsHook(stackai_conn)
    assert [r.id for r in hook.list_runs(flow_id=STACKAI_FLOW, states=["failed"])] == [ids[5]]
    window = hook.list_runs(
        flow_id=STACKAI_FLOW,
        created_after=datetime.fromtimestamp(1.7e9 + 3600, UTC),
        created_before=datetime.fromtimestamp(1.7e9 + 3 * 3600, UTC),
    )
    assert [r.id for r in window] == [ids[2], ids[1]]


def test_oauth_token_is_fetched_once_cached_and_renewed_after_401(
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    pdf: Path,
    context: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    set_connection(
        monkeypatch,
        "stackai_oauth",
        "stackai",
        emulator.url,
        password="analyst-password",
        org_id=STACKAI_ORG,
        token_url="/oauth/token",
        flow_id=STACKAI_FLOW,
    )
    conn = json.loads(os.environ["AIRFLOW_CONN_STACKAI_OAUTH"])
    monkeypatch.setenv("AIRFLOW_CONN_STACKAI_OAUTH", json.dumps({**conn, "login": "analyst"}))
    hook = FlowRunsHook("stackai_oauth")
    assert hook.test_connection()[0]
    assert hook.test_connection()[0]
    assert [r["path"] for r in emulator.requests()].count("/oauth/token") == 1
    emulator.control.post("/reset")  # forgets every token: the next call meets a 401 and renews
    assert hook.test_connection()[0]
    assert [r["status"] for r in emulator.requests()] == [401, 200, 200]
    out = capsys.readouterr()
    assert "analyst-password" not in out.out + out.err


def test_bad_oauth_password_is_a_clear_error(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_STACKAI_BADOAUTH",
        json.dumps(
            {
                "conn_type": "stackai",
                "login": "analyst",
                "password": "wrong",
                "host": emulator.url,
                "extra": {
                    "org_id": STACKAI_ORG,
                    "token_url": "/oauth/token",
                    "flow_id": STACKAI_FLOW,
                    "max_retries": 0,
                },
            }
        ),
    )
    ok, message = FlowRunsHook("stackai_badoauth").test_connection()
    assert not ok and "without an access_token" in message and "wrong" not in message


@pytest.mark.parametrize(
    ("conn_extra", "kwargs", "message"),
    [
        ({"org_id": None}, {}, "has no org_id"),
        ({}, {"metadata": {"a": 1}}, "StackAI runs take no metadata"),
        ({}, {"flow_id": "flow_nope"}, "HTTP 404.*Flow flow_nope not found"),
        ({}, {"files": {"doc-9": "PDF"}}, "HTTP 422.*doc-9 is not a document node"),
    ],
)
def test_bad_input_starts_nothing(
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    pdf: Path,
    context: dict[str, Any],
    conn_extra: dict[str, Any],
    kwargs: dict[str, Any],
    message: str,
) -> None:
    extra = {"org_id": STACKAI_ORG, **conn_extra}
    set_connection(monkeypatch, "stackai_bad", "stackai", emulator.url, **{k: v for k, v in extra.items() if v})
    if "files" in kwargs:
        kwargs["files"] = {"doc-9": pdf}
    with pytest.raises((FlowRunsConfigError, FlowRunsApiError), match=message):
        task("stackai_bad", pdf, **kwargs).execute(context)
    assert emulator.runs() == []
