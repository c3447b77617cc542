"""Extend over real HTTP against the emulator: upload then run, failures, review, cancel, deadlines, errors, bad
input (what every platform does alike is the platform contract's, ``tests/test_contract.py``)."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import Context
from airflow.sdk.exceptions import TaskDeferred
from pytest_mock import MockerFixture
from starlette.datastructures import UploadFile

from airflow_flowruns.exceptions import (
    FlowRunFailedError,
    FlowRunsApiError,
    FlowRunsConfigError,
    FlowRunsResponseError,
    FlowRunTimeoutError,
)
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.operators.flow_run import FlowRunOperator
from airflow_flowruns.platforms.extend.emulator import (
    EXTEND_FAILING_WORKFLOW,
    EXTEND_INVOICE_WORKFLOW,
    EXTEND_REVIEW_WORKFLOW,
)
from airflow_flowruns.platforms.extend.emulator_files import pdf_pages
from airflow_flowruns.platforms.usage import Usage
from airflow_flowruns.sensors.flow_run import FlowRunSensor
from airflow_flowruns.triggers.flow_run import FlowRunTrigger
from support.airflow import dags_test
from support.emulator import API_KEY, Emulator, set_connection, task_instance
from support.golden import golden
from support.hostile_server import HostileServer
from support.runs import check_review_policy, finish


@pytest.fixture
def extend_conn(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> str:
    return set_connection(monkeypatch, "extend_test", "extend", emulator.url)


def task(conn_id: str, pdf: Path, workflow: str = EXTEND_INVOICE_WORKFLOW, **kwargs: Any) -> FlowRunOperator:
    return FlowRunOperator(
        task_id="t",
        flowruns_conn_id=conn_id,
        flow_id=workflow,
        files={"file": pdf},
        metadata={"invoice": "INV-1"},
        poll_interval=0.05,
        **kwargs,
    )


def test_a_task_tags_its_run_with_its_dag_and_task_and_returns_what_it_cost(
    extend_conn: str, emulator: Emulator, pdf: Path, mocker: MockerFixture
) -> None:
    """The tags keep the task's own first; the ids' dots are written as hyphens, since Extend (and the emulator)
    removes every character a tag may not have, which would make ``invoices.daily`` arrive as ``invoicesdaily``."""
    op = FlowRunOperator(
        task_id="extract",
        flowruns_conn_id=extend_conn,
        flow_id=EXTEND_INVOICE_WORKFLOW,
        files={"file": pdf},
        metadata={"extend:usage_tags": ["team-ap"]},
        poll_interval=0.05,
    )
    result = finish(op, Context(ti=task_instance(mocker, dag_id="invoices.daily", task_id="group.extract")))
    (run,) = emulator.runs()
    assert run["metadata"]["extend:usage_tags"] == [
        "team-ap",
        "airflow-dag-invoices-daily",
        "airflow-task-group-extract",
    ]
    # two steps (classify, extract), a credit a page each, of a one-page PDF
    assert result["usage"] == {"credits": 2.0, "pages": 1, "tokens": None}


def test_the_emulator_counts_a_pdfs_page_objects_across_its_read_chunks() -> None:
    """``pageCount`` of an upload: ``/Type /Page`` objects, not the ``/Pages`` tree, one of them across the first
    MiB read and the next, counted once."""
    page = b"<< /Type /Page /Parent 2 0 R >>\n"
    head = b"%PDF-1.4\n<< /Type /Pages /Count 3 >>\n" + page
    filler = b"x" * ((1 << 20) - len(head) - 6)
    upload = UploadFile(io.BytesIO(head + filler + page + page + b"%%EOF\n"), filename="a.pdf")
    assert asyncio.run(pdf_pages(upload)) == 3


@pytest.mark.parametrize(
    ("usage", "pages", "problem"),
    [
        ({"totalCredits": 3}, 2, "usage.credits: Field required"),
        ({"credits": "a lot"}, 2, "usage.credits: Input should be a valid number"),
        ({"credits": 3}, 2.5, None),
    ],
    ids=["no credits", "credits not a number", "fractional page count"],
)
def test_a_run_whose_usage_breaks_the_sdks_model_is_the_providers_error(
    hostile: HostileServer, monkeypatch: pytest.MonkeyPatch, usage: dict[str, Any], pages: float, problem: str | None
) -> None:
    """``RunUsage.credits`` is a required number: without one the run is an answer of the wrong shape, named by
    platform and field. A ``pageCount`` is a float in the SDK, so a fractional one is no error: the pages are
    unknown."""
    run = {**golden("extend", "workflow_run_failed.json"), "id": "run_1", "usage": usage}
    run["files"] = [{**run["files"][0], "metadata": {"pageCount": pages}}]
    hostile.answer = lambda exchange: exchange.send(200, json.dumps(run).encode())
    try:
        hook = FlowRunsHook(set_connection(monkeypatch, "extend_hostile", "extend", hostile.url))
        if problem is None:
            assert hook.get_run(None, "run_1").usage == Usage(credits=3)
            return
        with pytest.raises(FlowRunsResponseError, match=f"Extend returned a workflow run .*{problem}") as raised:
            hook.get_run(None, "run_1")
        assert API_KEY not in str(raised.value)
    finally:
        hostile.answer = None


def wait_for(emulator: Emulator, run_id: str, status: str) -> None:
    deadline = time.monotonic() + 10
    while (current := next(r["status"] for r in emulator.runs() if r["id"] == run_id)) != status:
        assert time.monotonic() < deadline, current
        time.sleep(0.05)


def test_upload_then_run_then_wait(extend_conn: str, emulator: Emulator, pdf: Path, context: Context) -> None:
    emulator.scenario(EXTEND_INVOICE_WORKFLOW, "extend", queued_seconds=0.1, processing_seconds=0.2)
    result = finish(task(extend_conn, pdf, deferrable=True, flow_version="1"), context)
    (run,) = emulator.runs()
    assert (result["id"], result["state"], result["status"], result["platform"]) == (
        run["id"],
        "succeeded",
        "PROCESSED",
        "extend",
    )
    assert result["id"].startswith("workflow_run_")
    assert result["url"] == f"https://dashboard.extend.ai/workflows/runs/{run['id']}"
    assert run["metadata"]["invoice"] == "INV-1" and run["metadata"]["airflow_task_key"].startswith("af-")
    assert run["uploads"] == [{"field": "file", "filename": "doc.pdf", "size": pdf.stat().st_size}]
    assert run["version"] == "1"
    paths = [(r["method"], r["path"]) for r in emulator.requests()]
    assert paths[:2] == [("POST", "/files/upload"), ("POST", "/workflow_runs")]


def test_failed_and_rejected_runs_fail_the_task_with_the_reason(
    extend_conn: str, emulator: Emulator, pdf: Path, context: Context
) -> None:
    emulator.scenario(
        EXTEND_FAILING_WORKFLOW, "extend", processing_seconds=0.05, outcome="failed", error="OCR failed on page 2"
    )
    with pytest.raises(FlowRunFailedError, match="PROCESSING_ERROR: OCR failed on page 2"):
        finish(task(extend_conn, pdf, EXTEND_FAILING_WORKFLOW, deferrable=False), context)
    started = task(extend_conn, pdf, EXTEND_REVIEW_WORKFLOW, wait_for_completion=False).execute(context)
    emulator.control.post(f"/runs/{started['id']}/status", json={"status": "REJECTED", "message": "Wrong vendor"})
    sensor = FlowRunSensor(task_id="s", flowruns_conn_id=extend_conn, run_id=started["id"], poke_interval=1)
    with pytest.raises(FlowRunFailedError, match="ended failed \\(REJECTED\\): rejected in review: Wrong vendor"):
        sensor.poke(context)


@pytest.mark.parametrize(
    ("on_review", "expected"), [("succeed", "needs_review"), ("fail", "error"), ("wait", "PROCESSED")]
)
def test_review_policies(
    extend_conn: str, emulator: Emulator, pdf: Path, context: Context, on_review: str, expected: str
) -> None:
    emulator.scenario(EXTEND_REVIEW_WORKFLOW, "extend", processing_seconds=0.05, review=True, review_seconds=2.0)
    op = task(extend_conn, pdf, EXTEND_REVIEW_WORKFLOW, deferrable=True, on_review=on_review)
    check_review_policy(op, context, expected, "human review")


def test_worker_on_kill_cancels(extend_conn: str, emulator: Emulator, pdf: Path, context: Context) -> None:
    emulator.scenario(EXTEND_INVOICE_WORKFLOW, "extend", processing_seconds=60)
    op = task(extend_conn, pdf, wait_for_completion=False)
    started = op.execute(context)
    op.on_kill()
    assert next(r["status"] for r in emulator.runs()) in ("CANCELLING", "CANCELLED")
    wait_for(emulator, started["id"], "CANCELLED")
    assert [r["path"] for r in emulator.requests()][-1] == f"/workflow_runs/{started['id']}/cancel"


def test_trigger_on_kill_cancels_and_cleanup_does_not(
    extend_conn: str, emulator: Emulator, pdf: Path, context: Context
) -> None:
    emulator.scenario(EXTEND_INVOICE_WORKFLOW, "extend", processing_seconds=60)
    with pytest.raises(TaskDeferred) as deferred:
        task(extend_conn, pdf, deferrable=True).execute(context)
    trigger = deferred.value.trigger
    asyncio.run(trigger.cleanup())
    assert emulator.runs()[0]["status"] == "PROCESSING"
    asyncio.run(FlowRunTrigger(**trigger.serialize()[1]).on_kill())
    wait_for(emulator, emulator.runs()[0]["id"], "CANCELLED")


@pytest.mark.parametrize(("task_state", "cancelled"), [("deferred", False), ("failed", True), (None, True)])
def test_trigger_on_kill_leaves_the_run_of_a_task_still_deferred(
    extend_conn: str,
    emulator: Emulator,
    pdf: Path,
    context: Context,
    mocker: MockerFixture,
    task_state: str | None,
    cancelled: bool,
) -> None:
    """Airflow cancels "by user action" the copy a triggerer lost to another: a deferred task keeps its run."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    emulator.scenario(EXTEND_INVOICE_WORKFLOW, "extend", processing_seconds=60)
    with pytest.raises(TaskDeferred) as deferred:
        task(extend_conn, pdf, deferrable=True).execute(context)
    trigger = FlowRunTrigger(**deferred.value.trigger.serialize()[1])
    trigger.task_instance = SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=3)  # type: ignore[assignment]
    states = mocker.patch.object(
        RuntimeTaskInstance, "get_task_states", return_value={"r": {"t_3": task_state}} if task_state else {}
    )
    asyncio.run(trigger.on_kill())
    states.assert_called_once_with(dag_id="d", task_ids=["t"], run_ids=["r"], map_index=3)
    run_id = emulator.runs()[0]["id"]
    if cancelled:
        wait_for(emulator, run_id, "CANCELLED")
    else:
        assert emulator.runs()[0]["status"] == "PROCESSING"
        assert not any(r["path"].endswith("/cancel") for r in emulator.requests())


@pytest.mark.parametrize("cancel", [True, False])
def test_deadline(extend_conn: str, emulator: Emulator, pdf: Path, context: Context, cancel: bool) -> None:
    emulator.scenario(EXTEND_INVOICE_WORKFLOW, "extend", processing_seconds=60)
    op = task(extend_conn, pdf, deferrable=True, timeout=0.2, cancel_on_timeout=cancel)
    message = "It was cancelled on the platform" if cancel else "left running on the platform"
    with pytest.raises(FlowRunTimeoutError, match=message):
        finish(op, context)
    (run,) = emulator.runs()
    if cancel:
        wait_for(emulator, run["id"], "CANCELLED")
    else:
        assert run["status"] == "PROCESSING"


def test_402_usage_blocked_is_not_retried(extend_conn: str, emulator: Emulator) -> None:
    body = {"code": "USAGE_BLOCKED", "message": "Credits exhausted", "retryable": False}
    emulator.fault("/workflow_runs/", 402, json.dumps(body), count=5)
    with pytest.raises(FlowRunsApiError, match="HTTP 402.*USAGE_BLOCKED: Credits exhausted.*billing"):
        FlowRunsHook(extend_conn).get_run(None, "workflow_run_x")
    assert len(emulator.requests()) == 1


def test_rate_limit_exceeded_is_retried(extend_conn: str, emulator: Emulator) -> None:
    body = {"code": "RATE_LIMIT_EXCEEDED", "message": "Slow down", "retryable": True}
    emulator.fault("/workflow_runs", 429, json.dumps(body), headers={"Retry-After": "0"})
    assert FlowRunsHook(extend_conn).test_connection()[0]
    assert [r["status"] for r in emulator.requests()] == [429, 200]


def test_headers_carry_version_and_workspace(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "extend_org", "extend", emulator.url, workspace_id="ws_42")
    headers = FlowRunsHook("extend_org").platform.headers()
    assert headers["x-extend-api-version"] == "2026-02-09" and headers["x-extend-workspace-id"] == "ws_42"
    set_connection(monkeypatch, "extend_old", "extend", emulator.url, api_version="1999-01-01")
    with pytest.raises(FlowRunsApiError, match="HTTP 400.*x-extend-api-version"):
        FlowRunsHook("extend_old").get_run(None, "workflow_run_x")


def test_a_list_of_files_is_one_package_run(
    extend_conn: str, emulator: Emulator, pdfs: dict[str, Path], context: Context
) -> None:
    """``files={"file": [a, b, c]}`` starts one run processing the three together (``package``)."""
    paths = [pdfs["a"], pdfs["b"], pdfs["po"]]
    FlowRunOperator(
        task_id="t",
        flowruns_conn_id=extend_conn,
        flow_id=EXTEND_INVOICE_WORKFLOW,
        files={"file": paths},
        wait_for_completion=False,
    ).execute(context)
    (run,) = emulator.runs()
    assert [f["name"] for f in run["files"]] == ["a.pdf", "b.pdf", "po.pdf"]
    paths_called = [r["path"] for r in emulator.requests()]
    assert paths_called == ["/files/upload"] * 3 + ["/workflow_runs"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"flow_id": "workflow_nope"}, "HTTP 404.*Workflow workflow_nope not found"),
        ({"metadata": {"notes": "x" * 11_000}}, "Extend accepts at most 10240"),
        ({"files": {"file": "PDF", "second": "PDF"}}, "one file under the key 'file'"),
        ({"files": {"file": ["PDF"] * 51}}, "a package of 2 to 50 files.*this task gives 51"),
        ({"files": {"document": "PDF"}}, "one file under the key 'file', not 'document'"),
        ({"file_guidance": {"file": "x"}}, "Extend runs take no file_guidance"),
    ],
)
def test_bad_input_starts_nothing(
    extend_conn: str, emulator: Emulator, pdf: Path, context: Context, kwargs: dict[str, Any], message: str
) -> None:
    if "files" in kwargs:
        kwargs["files"] = json.loads(json.dumps(kwargs["files"]).replace('"PDF"', json.dumps(str(pdf))))
    args = {
        "task_id": "t",
        "flowruns_conn_id": extend_conn,
        "flow_id": EXTEND_INVOICE_WORKFLOW,
        "files": {"file": pdf},
        "deferrable": False,
        **kwargs,
    }
    with pytest.raises((FlowRunsConfigError, FlowRunsApiError), match=message):
        FlowRunOperator(**args).execute(context)
    assert emulator.runs() == []


@pytest.mark.integration
def test_example_dag(airflow_home: Path, emulator: Emulator, pdf: Path) -> None:
    conn = json.dumps({"conn_type": "extend", "password": API_KEY, "host": emulator.url})
    state, tasks, xcom = dags_test(
        airflow_home,
        "extend_invoice_extraction",
        AIRFLOW_CONN_EXTEND_DEFAULT=conn,
        AIRFLOW_VAR_FLOWRUNS_DATA_DIR=str(pdf.parent),
    )
    assert state == "success" and tasks["extract"] == "success"
    (run,) = emulator.runs()
    assert xcom["extract.return_value"]["id"] == run["id"]
    assert xcom["extract.return_value"]["state"] == "succeeded"
