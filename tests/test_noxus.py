"""Noxus over real HTTP against the emulator: upload then run with inputs, reads, failures, review, stop, bad input
(what every platform does alike is the platform contract's, ``tests/test_contract.py``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import Context
from airflow.sdk.exceptions import TaskDeferred

from airflow_flowruns.exceptions import FlowRunFailedError, FlowRunsApiError, FlowRunsConfigError, FlowRunTimeoutError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.operators._reattach import task_key
from airflow_flowruns.operators.flow_run import FlowRunOperator
from airflow_flowruns.platforms.base import RunState
from airflow_flowruns.platforms.noxus.emulator import (
    NOXUS_DOCUMENT_WORKFLOW,
    NOXUS_FAILING_WORKFLOW,
    NOXUS_REVIEW_WORKFLOW,
)
from airflow_flowruns.platforms.start import keyed_name
from airflow_flowruns.triggers.flow_run import FlowRunTrigger
from support.airflow import dags_test
from support.emulator import API_KEY, Emulator, set_connection
from support.runs import check_review_policy, finish


@pytest.fixture
def noxus_conn(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> str:
    return set_connection(monkeypatch, "noxus_test", "noxus", emulator.url)


def task(conn_id: str, pdf: Path, workflow: str = NOXUS_DOCUMENT_WORKFLOW, **kwargs: Any) -> FlowRunOperator:
    args = {"flow_id": workflow, "files": {"document": pdf}, "inputs": {"instructions": "Summarize"}, **kwargs}
    return FlowRunOperator(task_id="t", flowruns_conn_id=conn_id, poll_interval=0.05, **args)


def status_of(emulator: Emulator, run_id: str) -> str:
    return next(r["status"] for r in emulator.runs() if r["id"] == run_id)


def test_upload_then_run_with_inputs(noxus_conn: str, emulator: Emulator, pdf: Path, context: Context) -> None:
    emulator.scenario(NOXUS_DOCUMENT_WORKFLOW, "noxus", queued_seconds=0.1, processing_seconds=0.2)
    result = finish(task(noxus_conn, pdf, deferrable=True), context)
    (run,) = emulator.runs()
    assert (result["id"], result["state"], result["status"], result["platform"]) == (
        run["id"],
        "succeeded",
        "completed",
        "noxus",
    )
    assert run["input"]["instructions"] == "Summarize"
    named = keyed_name(task_key(context), "doc.pdf")  # Noxus runs keep no metadata: the file's name holds the key
    assert run["input"]["document"]["name"] == named and run["input"]["document"]["uri"].startswith("noxus://")
    assert run["uploads"] == [{"field": "document", "filename": named, "size": pdf.stat().st_size}]
    posts = [r["path"] for r in emulator.requests() if r["method"] == "POST"]
    assert posts == ["/v1/file", f"/v1/workflows/{NOXUS_DOCUMENT_WORKFLOW}/runs"]


def test_a_list_of_files_becomes_a_list_of_file_inputs(
    noxus_conn: str, emulator: Emulator, pdfs: dict[str, Path], context: Context
) -> None:
    task(noxus_conn, pdfs["a"], files={"document": [pdfs["a"], pdfs["b"]]}, wait_for_completion=False).execute(context)
    (run,) = emulator.runs()
    key = task_key(context)
    assert [ref["name"] for ref in run["input"]["document"]] == [keyed_name(key, "a.pdf"), keyed_name(key, "b.pdf")]


def test_a_run_reads_the_same_by_workflow_and_by_id(
    noxus_conn: str, emulator: Emulator, pdf: Path, context: Context
) -> None:
    """``GET /v1/workflows/{workflow}/runs/{id}`` with a flow id, ``GET /v1/runs/{id}`` without one."""
    started = task(noxus_conn, pdf, wait_for_completion=False).execute(context)
    emulator.set_status(started["id"], "awaiting_human_feedback")
    hook = FlowRunsHook(noxus_conn)
    by_workflow = hook.get_run(NOXUS_DOCUMENT_WORKFLOW, started["id"])
    by_id = hook.get_run(None, started["id"])
    assert (
        (by_workflow.status, by_workflow.state)
        == (by_id.status, by_id.state)
        == ("awaiting_human_feedback", RunState.NEEDS_REVIEW)
    )
    assert by_id.flow_id == NOXUS_DOCUMENT_WORKFLOW
    assert [r["path"] for r in emulator.requests()][-2:] == [
        f"/v1/workflows/{NOXUS_DOCUMENT_WORKFLOW}/runs/{started['id']}",
        f"/v1/runs/{started['id']}",
    ]


def test_failure_reason_comes_from_the_run_logs(
    noxus_conn: str, emulator: Emulator, pdf: Path, context: Context
) -> None:
    emulator.scenario(NOXUS_FAILING_WORKFLOW, "noxus", processing_seconds=0.05, outcome="failed", error="Node X broke")
    with pytest.raises(FlowRunFailedError, match="ended failed \\(failed\\): Node X broke"):
        finish(task(noxus_conn, pdf, NOXUS_FAILING_WORKFLOW, deferrable=False), context)


@pytest.mark.parametrize(
    ("on_review", "expected"), [("succeed", "needs_review"), ("fail", "error"), ("wait", "completed")]
)
def test_review_policies(
    noxus_conn: str, emulator: Emulator, pdf: Path, context: Context, on_review: str, expected: str
) -> None:
    emulator.scenario(NOXUS_REVIEW_WORKFLOW, "noxus", processing_seconds=0.05, review=True, review_seconds=2.0)
    op = task(noxus_conn, pdf, NOXUS_REVIEW_WORKFLOW, deferrable=True, on_review=on_review)
    check_review_policy(op, context, expected, "awaiting_human_feedback")


def test_worker_on_kill_stops_the_run(noxus_conn: str, emulator: Emulator, pdf: Path, context: Context) -> None:
    emulator.scenario(NOXUS_DOCUMENT_WORKFLOW, "noxus", processing_seconds=60)
    op = task(noxus_conn, pdf, wait_for_completion=False)
    started = op.execute(context)
    op.on_kill()
    assert status_of(emulator, started["id"]) == "stopped"


def test_trigger_on_kill_stops_the_run(noxus_conn: str, emulator: Emulator, pdf: Path, context: Context) -> None:
    emulator.scenario(NOXUS_DOCUMENT_WORKFLOW, "noxus", processing_seconds=60)
    with pytest.raises(TaskDeferred) as deferred:
        task(noxus_conn, pdf, deferrable=True).execute(context)
    run_id = emulator.runs()[0]["id"]
    asyncio.run(deferred.value.trigger.cleanup())
    assert status_of(emulator, run_id) == "running"
    asyncio.run(FlowRunTrigger(**deferred.value.trigger.serialize()[1]).on_kill())
    assert status_of(emulator, run_id) == "stopped"


@pytest.mark.parametrize("cancel", [True, False])
def test_deadline(noxus_conn: str, emulator: Emulator, pdf: Path, context: Context, cancel: bool) -> None:
    emulator.scenario(NOXUS_DOCUMENT_WORKFLOW, "noxus", processing_seconds=60)
    op = task(noxus_conn, pdf, deferrable=True, timeout=0.2, cancel_on_timeout=cancel)
    with pytest.raises(FlowRunTimeoutError, match="cancelled on the platform" if cancel else "left running"):
        finish(op, context)
    assert emulator.runs()[0]["status"] == ("stopped" if cancel else "running")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"flow_id": "00000000-0000-0000-0000-000000000000"}, "HTTP 404.*Workflow .* not found"),
        ({"inputs": {}}, "HTTP 422.*body.input.instructions: Field required"),
        ({"inputs": {"document": "x", "instructions": "y"}}, "'document' given both in files and in inputs"),
        ({"metadata": {"a": 1}}, "Noxus runs take no metadata"),
        ({"inputs": {"instructions": "y", "colour": "red"}}, "HTTP 422.*body.input.colour: Unknown input"),
    ],
)
def test_bad_input_starts_nothing(
    noxus_conn: str, emulator: Emulator, pdf: Path, context: Context, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises((FlowRunsConfigError, FlowRunsApiError), match=message):
        task(noxus_conn, pdf, deferrable=False, **kwargs).execute(context)
    assert emulator.runs() == []


@pytest.mark.integration
def test_example_dag(airflow_home: Path, emulator: Emulator, pdf: Path) -> None:
    conn = json.dumps({"conn_type": "noxus", "password": API_KEY, "host": emulator.url})
    state, tasks, xcom = dags_test(
        airflow_home,
        "noxus_document_workflow",
        AIRFLOW_CONN_NOXUS_DEFAULT=conn,
        AIRFLOW_VAR_FLOWRUNS_DATA_DIR=str(pdf.parent),
    )
    assert state == "success" and tasks["summarize"] == "success"
    (run,) = emulator.runs()
    assert xcom["summarize.return_value"]["id"] == run["id"]
    assert xcom["summarize.return_value"]["state"] == "succeeded"
