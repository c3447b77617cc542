"""Review in Airflow through the operator and the sensor, against the emulator, with Airflow's Required Actions
kept by ``support.hitl`` (the rules of Airflow's API; the task's own code runs as a worker, which may create an
item but not read or answer one): who decides, what the task does, what is left behind."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pytest
from airflow.providers.common.compat.sdk import Context
from airflow.sdk.exceptions import TaskDeferred
from pytest_mock import MockerFixture

from airflow_flowruns.exceptions import FlowRunRejectedError, FlowRunsConfigError, FlowRunTimeoutError
from airflow_flowruns.operators._review import PENDING_KEY, REVIEW_KEY
from airflow_flowruns.operators.flow_run import FlowRunOperator
from airflow_flowruns.platforms.extend.emulator import EXTEND_INVOICE_WORKFLOW, EXTEND_REVIEW_WORKFLOW
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_REVIEW_FLOW
from airflow_flowruns.review.register import register_key
from airflow_flowruns.sensors.flow_run import FlowRunSensor
from airflow_flowruns.triggers import review as review_trigger
from airflow_flowruns.triggers.review import FlowRunReviewTrigger
from support.emulator import Emulator, pushed, set_connection, task_instance
from support.hitl import AnsweredAlready, HitlStore, install, task_instance_with_item
from support.runs import run_trigger

WAIT, ACCEPT, REJECT = "Wait for the review in TableFlow", "Accept the extraction", "Reject the document"


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> HitlStore:
    monkeypatch.setattr(review_trigger, "ANSWER_POLL_SECONDS", 0.05)
    return install(monkeypatch)


@pytest.fixture
def ti(mocker: MockerFixture) -> MagicMock:
    return task_instance_with_item(mocker)


@pytest.fixture
def extend_conn(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> str:
    return set_connection(monkeypatch, "extend_test", "extend", emulator.url)


def operator(conn_id: str, flow_id: str, pdf: Path, **kwargs: Any) -> FlowRunOperator:
    defaults: dict[str, Any] = {"deferrable": True, "on_review": "airflow", "poll_interval": 0.05}
    field = "file" if conn_id.startswith("extend") else "document"
    return FlowRunOperator(
        task_id="t", flowruns_conn_id=conn_id, flow_id=flow_id, files={field: pdf}, **{**defaults, **kwargs}
    )


def until_review(op: FlowRunOperator, context: Context, store: HitlStore) -> FlowRunReviewTrigger:
    """Run the task, as a worker, up to the Required Action it raises; the trigger it defers to then."""
    with store.worker(), pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    if not isinstance(deferred.value.trigger, FlowRunReviewTrigger):
        event = run_trigger(deferred.value.trigger)
        with store.worker(), pytest.raises(TaskDeferred) as deferred:
            op.execute_complete(context, event)
    assert isinstance(deferred.value.trigger, FlowRunReviewTrigger)
    assert deferred.value.method_name == "review_complete"
    return deferred.value.trigger


def resume(op: FlowRunOperator, context: Context, store: HitlStore, event: dict[str, Any]) -> dict[str, Any]:
    with store.worker():
        return op.review_complete(context, event)


def airflow_resumes(store: HitlStore, ti: MagicMock) -> dict[str, Any]:
    """The event Airflow 3.3's API server resumes a deferred task with when a person answers."""
    answer = store.items[ti.id].answer
    assert answer is not None
    return {
        "chosen_options": answer["chosen_options"],
        "params_input": answer["params_input"],
        "responded_at": answer["at"],
        "responded_by_user": answer["user"],
        "timedout": False,
    }


def below_3_3(trigger: FlowRunReviewTrigger) -> FlowRunReviewTrigger:
    """The same trigger as Airflow 3.1 and 3.2 run it: reading the answer itself."""
    _, kwargs = trigger.serialize()
    return FlowRunReviewTrigger(**{**kwargs, "watch_answer": True})


def test_the_run_in_review_becomes_a_required_action(
    tableflow_conn: str, emulator: Emulator, pdf: Path, context: Context, ti: MagicMock, store: HitlStore
) -> None:
    emulator.scenario(TABLEFLOW_REVIEW_FLOW, processing_seconds=0.05, review=True)
    op = operator(tableflow_conn, TABLEFLOW_REVIEW_FLOW, pdf, review_assignees=["ana"])
    trigger = until_review(op, context, store)
    item = store.items[ti.id]
    (run,) = emulator.runs()
    assert item.subject == f"Review doc.pdf: TableFlow flow {TABLEFLOW_REVIEW_FLOW}"
    assert item.options == [WAIT, ACCEPT, REJECT]
    assert "note" in item.params and item.assigned_users == [{"id": "ana", "name": "ana"}]
    assert run["id"] in (item.body or "")
    _, kwargs = trigger.serialize()
    assert kwargs["ti_id"] == str(ti.id) and kwargs["run_id"] == run["id"]
    assert (kwargs["follow_run"], kwargs["close_with"]) == (True, WAIT)


def test_the_vendor_decides_and_the_item_is_closed_with_a_note(
    tableflow_conn: str, emulator: Emulator, pdf: Path, context: Context, ti: MagicMock, store: HitlStore
) -> None:
    emulator.scenario(TABLEFLOW_REVIEW_FLOW, processing_seconds=0.05, review=True)
    op = operator(tableflow_conn, TABLEFLOW_REVIEW_FLOW, pdf)
    trigger = until_review(op, context, store)
    emulator.set_status(emulator.runs()[0]["id"], "completed")
    result = resume(op, context, store, run_trigger(trigger))
    assert result["state"] == "succeeded" and result[REVIEW_KEY]["where"] == "tableflow"
    answer = store.items[ti.id].answer
    assert answer is not None and answer["user"] is None and answer["chosen_options"] == [WAIT]
    assert answer["params_input"]["note"] == "Decided in TableFlow: the run ended succeeded (completed)."
    assert pushed(ti)[REVIEW_KEY][-1]["decision"] == "succeeded"
    with pytest.raises(AnsweredAlready):  # a person who answers now is told the item is closed
        store.answer(ti.id, ACCEPT)


def test_accept_with_edits_lands_both_values_side_by_side(
    extend_conn: str, emulator: Emulator, pdf: Path, context: Context, ti: MagicMock, store: HitlStore, tmp_path: Path
) -> None:
    emulator.scenario(EXTEND_REVIEW_WORKFLOW, "extend", processing_seconds=0.05, review=True)
    op = operator(extend_conn, EXTEND_REVIEW_WORKFLOW, pdf, outputs_to=str(tmp_path / "out"))
    until_review(op, context, store)
    field, extracted = next(iter(store.items[ti.id].params.items()))
    store.answer(ti.id, ACCEPT, {field: "EDITED", "note": "checked against the PO"})
    result = resume(op, context, store, airflow_resumes(store, ti))
    review = result[REVIEW_KEY]
    assert (review["where"], review["decision"], review["by"]) == ("airflow", "accept", "ana")
    assert review["edited"] == {field: {"extracted": extracted["value"], "reviewed": "EDITED"}}
    outputs = json.loads((Path(result["landing"]["path"]) / "outputs.json").read_text())
    entry = next(o for o in outputs["outputs"] if o["name"] == field)
    assert (entry["value"], entry["initial_value"], entry["reviewed_value"]) == ("EDITED", extracted["value"], "EDITED")
    assert outputs["review"]["by"] == "ana"


def test_reject_fails_without_retry_and_names_the_reason(
    tableflow_conn: str, emulator: Emulator, pdf: Path, context: Context, ti: MagicMock, store: HitlStore
) -> None:
    emulator.scenario(TABLEFLOW_REVIEW_FLOW, processing_seconds=0.05, review=True)
    op = operator(tableflow_conn, TABLEFLOW_REVIEW_FLOW, pdf)
    trigger = until_review(op, context, store)
    store.answer(ti.id, REJECT, {"note": "not our invoice"})
    event = run_trigger(below_3_3(trigger))
    assert event["outcome"] == "answered"
    with pytest.raises(FlowRunRejectedError, match="ana rejected doc.pdf in Airflow: not our invoice"):
        resume(op, context, store, event)
    assert pushed(ti)[REVIEW_KEY][-1]["decision"] == "reject" and len(emulator.runs()) == 1
    (run,) = emulator.runs()
    kept = json.loads(store.variables[register_key("tableflow", run["id"])])  # for the export's rows
    assert (kept["where"], kept["decision"], kept["by"]) == ("airflow", "reject", "ana")
    assert kept["task"]["task_id"] == ti.task_id and "note" not in kept


def test_an_answer_recorded_before_the_item_is_closed_decides(
    tableflow_conn: str, emulator: Emulator, pdf: Path, context: Context, ti: MagicMock, store: HitlStore
) -> None:
    emulator.scenario(TABLEFLOW_REVIEW_FLOW, processing_seconds=0.05, review=True)
    op = operator(tableflow_conn, TABLEFLOW_REVIEW_FLOW, pdf)
    trigger = until_review(op, context, store)
    emulator.set_status(emulator.runs()[0]["id"], "failed")  # the vendor decides ...
    store.answer(ti.id, ACCEPT)  # ... and a person's answer reaches Airflow before the trigger closes the item
    event = run_trigger(trigger)
    assert event["outcome"] == "answered"
    result = resume(op, context, store, event)
    assert (result[REVIEW_KEY]["where"], result[REVIEW_KEY]["decision"]) == ("airflow", "accept")


def test_wait_leaves_the_decision_to_the_vendor(
    tableflow_conn: str, emulator: Emulator, pdf: Path, context: Context, ti: MagicMock, store: HitlStore
) -> None:
    emulator.scenario(TABLEFLOW_REVIEW_FLOW, processing_seconds=0.05, review=True)
    op = operator(tableflow_conn, TABLEFLOW_REVIEW_FLOW, pdf)
    until_review(op, context, store)
    store.answer(ti.id, WAIT)
    with store.worker(), pytest.raises(TaskDeferred) as again:
        op.review_complete(context, airflow_resumes(store, ti))
    _, kwargs = again.value.trigger.serialize()
    assert (kwargs["watch_answer"], kwargs["follow_run"], kwargs["close_with"]) == (False, True, None)
    emulator.set_status(emulator.runs()[0]["id"], "completed")
    result = resume(op, context, store, run_trigger(again.value.trigger))
    assert (result["state"], result[REVIEW_KEY]["where"]) == ("succeeded", "tableflow")
    kept = store.items[ti.id].answer
    assert kept is not None and kept["user"] == {"id": "ana", "name": "ana"}
    assert store.variables == {}, "the vendor decided: the platform's own record says so"


def test_a_task_waiting_in_the_worker_defers_for_the_review(
    tableflow_conn: str, emulator: Emulator, pdf: Path, context: Context, ti: MagicMock, store: HitlStore
) -> None:
    emulator.scenario(TABLEFLOW_REVIEW_FLOW, processing_seconds=0.05, review=True)
    op = operator(tableflow_conn, TABLEFLOW_REVIEW_FLOW, pdf, deferrable=False, timeout=60)
    trigger = until_review(op, context, store)
    store.answer(ti.id, ACCEPT)
    result = resume(op, context, store, run_trigger(below_3_3(trigger)))
    assert (result["state"], result[REVIEW_KEY]["decision"]) == ("needs_review", "accept")


def test_the_confidence_gate_asks_about_a_run_that_finished(
    extend_conn: str, emulator: Emulator, pdf: Path, context: Context, ti: MagicMock, store: HitlStore
) -> None:
    emulator.scenario(EXTEND_INVOICE_WORKFLOW, "extend", processing_seconds=0.05)
    op = operator(extend_conn, EXTEND_INVOICE_WORKFLOW, pdf, on_review="succeed", review_below_confidence=0.9)
    trigger = until_review(op, context, store)
    item = store.items[ti.id]
    assert item.options == [ACCEPT, REJECT] and "Uncertain:" in (item.body or "")
    assert "wait for the review" not in (item.body or "")
    assert trigger.serialize()[1]["follow_run"] is False
    store.answer(ti.id, ACCEPT)
    result = resume(op, context, store, airflow_resumes(store, ti))
    assert (result["state"], result[REVIEW_KEY]["decision"]) == ("succeeded", "accept")


@pytest.mark.parametrize("deferrable", [True, False])
def test_the_confidence_gate_is_refused_where_outputs_carry_none(
    tableflow_conn: str, emulator: Emulator, pdf: Path, context: Context, store: HitlStore, deferrable: bool
) -> None:
    op = operator(tableflow_conn, TABLEFLOW_REVIEW_FLOW, pdf, review_below_confidence=0.9, deferrable=deferrable)
    with pytest.raises(FlowRunsConfigError, match=r"TableFlow gives none \(platforms that do: Extend\)"):
        op.execute(context)
    sensor = FlowRunSensor(
        task_id="s", flowruns_conn_id=tableflow_conn, run_id="r", review_below_confidence=0.9, deferrable=deferrable
    )
    with pytest.raises(FlowRunsConfigError, match="TableFlow gives none"):
        sensor.execute(context)
    assert emulator.runs() == [] and store.items == {}


def test_the_deadline_closes_the_item(
    tableflow_conn: str, emulator: Emulator, pdf: Path, context: Context, ti: MagicMock, store: HitlStore
) -> None:
    emulator.scenario(TABLEFLOW_REVIEW_FLOW, processing_seconds=0.05, review=True)
    op = operator(tableflow_conn, TABLEFLOW_REVIEW_FLOW, pdf, timeout=60)
    _, kwargs = until_review(op, context, store).serialize()
    event = run_trigger(FlowRunReviewTrigger(**{**kwargs, "deadline": time.time() + 0.3}))
    assert event["outcome"] == "timeout"
    answer = store.items[ti.id].answer
    assert answer is not None and "deadline" in answer["params_input"]["note"]
    with pytest.raises(FlowRunTimeoutError, match="waited for review .* left as it is on the platform"):
        resume(op, context, store, event)


def test_a_resume_without_its_pending_review_says_so(
    tableflow_conn: str, context: Context, ti: MagicMock, store: HitlStore
) -> None:
    op = operator(tableflow_conn, TABLEFLOW_REVIEW_FLOW, Path("x.pdf"))
    with pytest.raises(Exception, match="without the review it raised"):
        resume(op, context, store, {"outcome": "settled"})
    assert PENDING_KEY not in pushed(ti)


def test_the_sensor_names_the_document_it_was_given(
    tableflow_conn: str, emulator: Emulator, pdf: Path, context: Context, ti: MagicMock, store: HitlStore
) -> None:
    emulator.scenario(TABLEFLOW_REVIEW_FLOW, processing_seconds=0.05, review=True)
    run_id = operator(tableflow_conn, TABLEFLOW_REVIEW_FLOW, pdf, wait_for_completion=False).execute(context)["id"]
    sensor = FlowRunSensor(
        task_id="review",
        flowruns_conn_id=tableflow_conn,
        run_id=run_id,
        flow_id=TABLEFLOW_REVIEW_FLOW,
        on_review="airflow",
        document="invoices/2024/a.pdf",
        poke_interval=0.05,
        timeout=60,
    )
    with store.worker(), pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context)  # in poke mode: the review still waits in the triggerer
    assert store.items[ti.id].subject.startswith("Review invoices/2024/a.pdf: TableFlow")
    store.answer(ti.id, ACCEPT, user="bo")
    event = run_trigger(below_3_3(deferred.value.trigger))
    with store.worker():
        result = sensor.review_complete(context, event)
    assert result[REVIEW_KEY]["by"] == "bo"


def test_a_review_in_the_vendors_app_names_its_reviewer(
    extend_conn: str, emulator: Emulator, pdf: Path, context: Context, ti: MagicMock, store: HitlStore
) -> None:
    emulator.scenario(EXTEND_REVIEW_WORKFLOW, "extend", processing_seconds=0.05, review=True)
    op = operator(extend_conn, EXTEND_REVIEW_WORKFLOW, pdf)
    trigger = until_review(op, context, store)
    emulator.set_status(emulator.runs()[0]["id"], "PROCESSED")
    result = resume(op, context, store, run_trigger(trigger))
    assert (result["reviewed_by"], result[REVIEW_KEY]["where"]) == ("reviewer@example.com", "extend")


def test_a_batch_hands_every_document_in_review_to_its_review_task(
    tableflow_conn: str, emulator: Emulator, mocker: MockerFixture, tmp_path: Path
) -> None:
    from airflow_flowruns.operators._batch_review import HANDED_TO_REVIEW_KEY
    from airflow_flowruns.operators.batch import FlowRunBatchOperator

    for name in ("a.pdf", "b/c.pdf"):
        (tmp_path / "docs" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "docs" / name).write_bytes(b"%PDF-1.4\n%%EOF\n")
    emulator.scenario(TABLEFLOW_REVIEW_FLOW, processing_seconds=0.05, review=True)
    ti = task_instance(mocker)
    op = FlowRunBatchOperator(
        task_id="extract",
        flowruns_conn_id=tableflow_conn,
        flow_id=TABLEFLOW_REVIEW_FLOW,
        documents=f"{tmp_path / 'docs'}/",
        file_field="document",
        on_review="airflow",
        poll_interval=0.05,
    )
    summary = op.execute(Context(ti=ti))
    assert summary["counts"] == {"needs_review": 2}
    runs = {run["metadata"]["airflow_document_key"]: run["id"] for run in emulator.runs()}
    assert pushed(ti)[HANDED_TO_REVIEW_KEY] == [
        [{"run_id": runs[key], "flow_id": TABLEFLOW_REVIEW_FLOW, "document": key} for key in ("a.pdf", "b/c.pdf")]
    ]


def test_an_answer_no_person_gave_is_no_decision(
    tableflow_conn: str, emulator: Emulator, pdf: Path, context: Context, ti: MagicMock, store: HitlStore
) -> None:
    emulator.scenario(TABLEFLOW_REVIEW_FLOW, processing_seconds=0.05, review=True)
    trigger = below_3_3(until_review(operator(tableflow_conn, TABLEFLOW_REVIEW_FLOW, pdf), context, store))
    store.update(ti.id, [ACCEPT], {})  # recorded with no person (as a timeout default is)
    _, kwargs = trigger.serialize()
    event = run_trigger(FlowRunReviewTrigger(**{**kwargs, "deadline": time.time() + 0.3}))
    assert event["outcome"] == "timeout"


def test_an_answer_given_before_the_task_deferred_is_read_once(
    tableflow_conn: str, emulator: Emulator, pdf: Path, context: Context, ti: MagicMock, store: HitlStore
) -> None:
    emulator.scenario(TABLEFLOW_REVIEW_FLOW, processing_seconds=0.05, review=True)
    _, kwargs = until_review(operator(tableflow_conn, TABLEFLOW_REVIEW_FLOW, pdf), context, store).serialize()
    store.answer(ti.id, ACCEPT)  # recorded before the task was deferred: Airflow 3.3 resumes nothing then
    as_on_3_3 = FlowRunReviewTrigger(**{**kwargs, "watch_answer": False, "deadline": time.time() + 5})
    assert run_trigger(as_on_3_3)["outcome"] == "answered"
