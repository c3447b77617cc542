"""FlowRunOperator against the emulator: worker path, deferred path, review policies, failures."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import httpx
import pytest
from airflow.providers.common.compat.sdk import Context
from airflow.sdk.exceptions import TaskDeferred

from airflow_flowruns.exceptions import FlowRunFailedError, FlowRunTimeoutError
from airflow_flowruns.operators.flow_run import FlowRunOperator, task_key
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_FAILING_FLOW, TABLEFLOW_REVIEW_FLOW
from airflow_flowruns.triggers.flow_run import FlowRunTrigger
from support.emulator import API_KEY, Emulator, pushed
from support.runs import FLOW_RUN_XCOM_KEYS, RECONCILIATION_FLOW, finish, run_trigger


def reconcile(conn_id: str, pdfs: dict[str, Path], **kwargs: Any) -> FlowRunOperator:
    return FlowRunOperator(
        task_id="reconcile",
        flowruns_conn_id=conn_id,
        flow_id=RECONCILIATION_FLOW,
        files={"purchase_order": str(pdfs["po"]), "invoice": pdfs["inv"], "attachments": [pdfs["a"], pdfs["b"]]},
        run_name="PO-123 Reconciliation",
        metadata={"customer_id": "12345"},
        file_metadata={"purchase_order": {"po_number": "PO-123"}},
        file_guidance={"purchase_order": "Strip a trailing REV:n from the PO number"},
        poll_interval=0.05,
        **kwargs,
    )


def test_worker_path_uploads_everything_and_returns_the_run(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path], context: Context, ti: MagicMock
) -> None:
    emulator.scenario(RECONCILIATION_FLOW, processing_seconds=0.2)
    result = reconcile(tableflow_conn, pdfs, deferrable=False).execute(context)

    (run,) = emulator.runs()
    assert sorted((f["field"], f["filename"]) for f in run["files"]) == [
        ("attachments_1", "a.pdf"),
        ("attachments_2", "b.pdf"),
        ("invoice", "inv.pdf"),
        ("purchase_order", "po.pdf"),
    ]
    assert run["name"] == "PO-123 Reconciliation"
    assert run["metadata"] == {"customer_id": "12345", "airflow_task_key": task_key(context)}
    assert run["file_metadata"] == {"purchase_order": {"po_number": "PO-123"}}
    assert run["guidance"] == {"purchase_order": "Strip a trailing REV:n from the PO number"}

    assert set(result) == FLOW_RUN_XCOM_KEYS
    assert (result["id"], result["state"], result["status"]) == (run["id"], "succeeded", "completed")
    assert result["metadata"]["customer_id"] == "12345" and result["duration_ms"] >= 0
    assert pushed(ti) == {"flow_run_id": [run["id"]], "flow_run_url": [result["url"]]}


def test_ids_are_pushed_before_waiting(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path], context: Context, ti: MagicMock
) -> None:
    with pytest.raises(TaskDeferred):
        reconcile(tableflow_conn, pdfs, deferrable=True).execute(context)
    assert pushed(ti)["flow_run_id"] == [emulator.runs()[0]["id"]]


def test_deferred_path_hands_over_to_the_trigger_and_completes(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path], context: Context
) -> None:
    emulator.scenario(RECONCILIATION_FLOW, processing_seconds=0.2)
    op = reconcile(tableflow_conn, pdfs, deferrable=True, timeout=120)
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    trigger = deferred.value.trigger
    assert isinstance(trigger, FlowRunTrigger) and deferred.value.method_name == "execute_complete"
    _, kwargs = trigger.serialize()
    assert before + 120 <= kwargs["deadline"] <= time.time() + 120
    assert kwargs["run_id"] == emulator.runs()[0]["id"] and kwargs["conn_id"] == tableflow_conn

    event = run_trigger(FlowRunTrigger(**kwargs))
    assert event["outcome"] == "settled"
    result = op.execute_complete(context, event)
    assert result["state"] == "succeeded" and result["id"] == kwargs["run_id"]


def test_wait_for_completion_false_returns_the_started_run(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path], context: Context
) -> None:
    result = reconcile(tableflow_conn, pdfs, wait_for_completion=False, deferrable=True).execute(context)
    assert result["state"] == "running" and result["status"] == "processing"
    assert len(emulator.runs()) == 1


def test_failed_run_fails_the_task_with_the_platforms_reason(
    tableflow_conn: str, emulator: Emulator, pdf: Path, context: Context
) -> None:
    emulator.scenario(TABLEFLOW_FAILING_FLOW, processing_seconds=0.05, outcome="failed", error="Invoice total mismatch")
    op = one_document(TABLEFLOW_FAILING_FLOW, tableflow_conn, pdf, deferrable=False)
    with pytest.raises(FlowRunFailedError, match="ended failed \\(failed\\): Invoice total mismatch"):
        op.execute(context)


@pytest.mark.parametrize("deferrable", [False, True])
def test_review_succeed_returns_needs_review(
    tableflow_conn: str, emulator: Emulator, pdf: Path, context: Context, deferrable: bool
) -> None:
    emulator.scenario(TABLEFLOW_REVIEW_FLOW, processing_seconds=0.05, review=True)
    op = one_document(TABLEFLOW_REVIEW_FLOW, tableflow_conn, pdf, deferrable=deferrable)
    result = finish(op, context)
    assert (result["state"], result["status"]) == ("needs_review", "review")


def test_review_fail_fails_the_task(tableflow_conn: str, emulator: Emulator, pdf: Path, context: Context) -> None:
    emulator.scenario(TABLEFLOW_REVIEW_FLOW, processing_seconds=0.05, review=True)
    op = one_document(TABLEFLOW_REVIEW_FLOW, tableflow_conn, pdf, deferrable=False, on_review="fail")
    with pytest.raises(FlowRunFailedError, match="stopped for human review"):
        op.execute(context)


def test_review_wait_waits_for_the_final_state(
    tableflow_conn: str, emulator: Emulator, pdf: Path, context: Context
) -> None:
    emulator.scenario(TABLEFLOW_REVIEW_FLOW, processing_seconds=0.05, review=True, review_seconds=0.3)
    op = one_document(TABLEFLOW_REVIEW_FLOW, tableflow_conn, pdf, deferrable=True, on_review="wait")
    result = finish(op, context)
    assert result["state"] == "succeeded"
    history = httpx.get(f"{emulator.url}/v2/flows/runs/{result['id']}", headers={"Authorization": f"Bearer {API_KEY}"})
    statuses = [h["status"] for h in history.json()["status_history"]]
    assert statuses[:2] == ["processing", "review"]


def test_deadline_fails_the_task_and_says_the_run_keeps_going(
    tableflow_conn: str, emulator: Emulator, pdf: Path, context: Context
) -> None:
    emulator.scenario(TABLEFLOW_REVIEW_FLOW, processing_seconds=60)
    op = one_document(TABLEFLOW_REVIEW_FLOW, tableflow_conn, pdf, timeout=0.2, deferrable=True)
    with pytest.raises(FlowRunTimeoutError, match="TableFlow has no cancel call, so the run keeps going"):
        finish(op, context)


def one_document(flow_id: str, conn_id: str, pdf: Path, **kwargs: Any) -> FlowRunOperator:
    return FlowRunOperator(
        task_id="t", flowruns_conn_id=conn_id, flow_id=flow_id, files={"document": pdf}, poll_interval=0.05, **kwargs
    )
