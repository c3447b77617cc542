"""What ``make e2e-review`` found under a real Airflow 3.3, kept as tests against the emulator: a person's answer
leaves the vendor's run alone, a task resumed in a fresh operator still names its file in the Required Action's
subject, and Airflow's form lets a reviewer choose an option without writing a note."""

from __future__ import annotations

import asyncio
from pathlib import Path
from unittest.mock import MagicMock

import pytest
from airflow.providers.common.compat.sdk import Context
from airflow.sdk.exceptions import TaskDeferred
from pytest_mock import MockerFixture

from airflow_flowruns.operators.flow_run import FlowRunOperator
from airflow_flowruns.platforms.extend.emulator import EXTEND_REVIEW_WORKFLOW
from airflow_flowruns.platforms.noxus.emulator import NOXUS_REVIEW_WORKFLOW
from airflow_flowruns.review.ask import Ask, Choice
from airflow_flowruns.triggers.review import FlowRunReviewTrigger
from support.emulator import Emulator, set_connection
from support.hitl import HitlStore, install, task_instance_with_item
from support.runs import run_trigger

NOXUS_IN_REVIEW = "awaiting_human_feedback"


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> HitlStore:
    return install(monkeypatch)


@pytest.fixture
def ti(mocker: MockerFixture) -> MagicMock:
    return task_instance_with_item(mocker)


def review_trigger(op: FlowRunOperator, context: Context, store: HitlStore) -> FlowRunReviewTrigger:
    with store.worker(), pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    assert isinstance(deferred.value.trigger, FlowRunReviewTrigger)
    return deferred.value.trigger


@pytest.mark.parametrize(("answered", "left_as"), [(True, NOXUS_IN_REVIEW), (False, "stopped")])
def test_an_answer_in_airflow_leaves_the_run_in_the_vendors_review(
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    pdf: Path,
    context: Context,
    ti: MagicMock,
    store: HitlStore,
    answered: bool,
    left_as: str,
) -> None:
    """Airflow 3.3 resumes a task on an answer by cancelling its trigger, which then runs ``on_kill``: only a
    task marked failed or cleared, with its Required Action unanswered, cancels the run."""
    conn_id = set_connection(monkeypatch, "noxus_test", "noxus", emulator.url)
    emulator.scenario(NOXUS_REVIEW_WORKFLOW, "noxus", processing_seconds=0, review=True)
    op = FlowRunOperator(
        task_id="t",
        flowruns_conn_id=conn_id,
        flow_id=NOXUS_REVIEW_WORKFLOW,
        files={"document": pdf},
        inputs={"instructions": "Extract the invoice"},
        on_review="airflow",
        deferrable=True,
        poll_interval=0.05,
    )
    trigger = review_trigger(op, context, store)
    if answered:
        store.answer(ti.id, "Accept the extraction")
    asyncio.run(trigger.on_kill())
    (run,) = emulator.runs()
    assert run["status"] == left_as


def test_a_resumed_task_names_its_file_in_the_subject(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, pdf: Path, context: Context, ti: MagicMock, store: HitlStore
) -> None:
    """The run reaches review after the task deferred: the Required Action is raised by a fresh operator, as a
    worker resumes the task, which never ran ``execute``."""
    conn_id = set_connection(monkeypatch, "extend_test", "extend", emulator.url)
    emulator.scenario(EXTEND_REVIEW_WORKFLOW, "extend", processing_seconds=0.2, review=True)

    def operator() -> FlowRunOperator:
        return FlowRunOperator(
            task_id="t",
            flowruns_conn_id=conn_id,
            flow_id=EXTEND_REVIEW_WORKFLOW,
            files={"file": str(pdf)},
            on_review="airflow",
            deferrable=True,
            poll_interval=0.05,
        )

    with store.worker(), pytest.raises(TaskDeferred) as first:
        operator().execute(context)
    event = run_trigger(first.value.trigger)
    with store.worker(), pytest.raises(TaskDeferred) as review:
        operator().execute_complete(context, event)
    assert isinstance(review.value.trigger, FlowRunReviewTrigger)
    assert store.items[ti.id].subject.startswith(f"Review {pdf.name}: Extend flow ")


def test_a_reviewer_can_choose_an_option_without_a_note() -> None:
    """Airflow's form requires every parameter whose JSON type does not allow null, and keeps the options
    disabled while one is empty: the note, empty by default, must not be required."""
    ask = Ask("Review doc.pdf", "", {Choice.ACCEPT: "Accept the extraction"}, {"total": 1234.5})
    required = [name for name, spec in ask.params().items() if "null" not in spec["schema"]["type"]]
    assert required == []
