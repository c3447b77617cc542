"""What a wait logs, in the worker and deferred to the triggerer: each state of the run once, a heartbeat while
none changes, and one closing line with the final state, how long the run took and its link."""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from airflow.providers.common.compat.sdk import Context

from airflow_flowruns import waiting
from airflow_flowruns.exceptions import FlowRunFailedError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.operators.flow_run import FlowRunOperator
from airflow_flowruns.platforms.start import StartRequest
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_FAILING_FLOW, TABLEFLOW_REVIEW_FLOW
from airflow_flowruns.sensors.flow_run import FlowRunSensor
from airflow_flowruns.triggers import review as review_trigger
from airflow_flowruns.triggers.review import FlowRunReviewTrigger
from support.emulator import Emulator
from support.hitl import install
from support.runs import RECONCILIATION_FLOW, finish, run_trigger

HEARTBEAT = 0.2
"""The heartbeat interval of the tests that wait for one, in seconds."""


LINE = re.compile(r"(?P<at>\S+) \[(?P<level>\w+) *\] (?P<message>.*) \[(?P<logger>[\w.]+)\] loc=\S+.*")
"""A line of Airflow's console log: the task's, hook's and trigger's loggers log through structlog to stdout,
past ``caplog``, which gets the package's module loggers."""


@dataclass(frozen=True)
class Line:
    at: datetime
    message: str


@pytest.fixture
def logged(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Callable[[], list[Line]]:
    """The INFO and above lines logged so far, in the order they were logged."""
    caplog.set_level(logging.INFO)

    def lines() -> list[Line]:
        found = (LINE.fullmatch(text) for text in capsys.readouterr().out.splitlines())
        printed = [Line(datetime.fromisoformat(m["at"]), m["message"]) for m in found if m]
        recorded = [Line(datetime.fromtimestamp(r.created, UTC), r.getMessage()) for r in caplog.records]
        return sorted(printed + recorded, key=lambda line: line.at)

    return lines


def said(lines: list[Line], start: str) -> list[Line]:
    return [line for line in lines if line.message.startswith(start)]


def files_of(flow_id: str, pdfs: dict[str, Path]) -> dict[str, Any]:
    if flow_id == RECONCILIATION_FLOW:
        return {"purchase_order": pdfs["po"], "invoice": pdfs["inv"]}
    return {"document": pdfs["po"]}


def operator(conn_id: str, flow_id: str, pdfs: dict[str, Path], *, deferrable: bool) -> FlowRunOperator:
    return FlowRunOperator(
        task_id="t",
        flowruns_conn_id=conn_id,
        flow_id=flow_id,
        files=files_of(flow_id, pdfs),
        poll_interval=0.05,
        deferrable=deferrable,
    )


def started(conn_id: str, pdfs: dict[str, Path], flow_id: str = RECONCILIATION_FLOW) -> str:
    return FlowRunsHook(conn_id).start_run(StartRequest(flow_id=flow_id, files=files_of(flow_id, pdfs))).id


def polls(emulator: Emulator, run_id: str) -> int:
    return sum(r["method"] == "GET" and run_id in r["path"] for r in emulator.requests())


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferred"])
@pytest.mark.parametrize(
    ("flow_id", "ending", "scenario"),
    [
        (RECONCILIATION_FLOW, "succeeded (completed)", {}),
        (TABLEFLOW_FAILING_FLOW, "failed (failed)", {"outcome": "failed", "error": "Unreadable scan"}),
    ],
    ids=["succeeded", "failed"],
)
def test_a_wait_logs_each_state_once_and_closes_with_state_duration_and_link(
    tableflow_conn: str,
    emulator: Emulator,
    pdfs: dict[str, Path],
    context: Context,
    logged: Callable[[], list[Line]],
    deferrable: bool,
    flow_id: str,
    ending: str,
    scenario: dict[str, str],
) -> None:
    emulator.scenario(flow_id, processing_seconds=1.5, **scenario)  # polls enough to repeat a state, under load too
    op = operator(tableflow_conn, flow_id, pdfs, deferrable=deferrable)
    try:
        finish(op, context)
    except FlowRunFailedError:
        assert ending.startswith("failed")

    run, lines = op.settled_run, logged()
    assert run is not None and run.url
    states = [line.message for line in said(lines, f"tableflow run {run.id} is ")]
    assert f"tableflow run {run.id} is processing (running)" in " ".join(states), lines
    assert len(states) == len(set(states)), f"each state once, not once per poll: {states}"
    assert polls(emulator, run.id) > len(states) + 1, "some polls saw no new state and logged nothing"
    (closing,) = said(lines, f"tableflow run {run.id!r} of flow {flow_id!r} ended")
    assert re.fullmatch(rf".* ended {re.escape(ending)} after [\d.]+ s: {re.escape(run.url)}", closing.message)


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferred"])
def test_a_long_wait_logs_a_heartbeat_with_state_time_waited_and_next_check(
    tableflow_conn: str,
    emulator: Emulator,
    pdfs: dict[str, Path],
    context: Context,
    logged: Callable[[], list[Line]],
    monkeypatch: pytest.MonkeyPatch,
    deferrable: bool,
) -> None:
    monkeypatch.setattr(waiting, "HEARTBEAT_SECONDS", HEARTBEAT)
    emulator.scenario(RECONCILIATION_FLOW, processing_seconds=1.2)
    result = finish(operator(tableflow_conn, RECONCILIATION_FLOW, pdfs, deferrable=deferrable), context)

    lines = said(logged(), f"tableflow run {result['id']} is ")
    beats = said(lines, f"tableflow run {result['id']} is still processing (running), ")
    assert beats, lines
    for beat in beats:
        assert re.fullmatch(r".*, [\d.]+ s into the wait; next check in [\d.]+ s\.", beat.message)
    gaps = [(later.at - earlier.at).total_seconds() for earlier, later in itertools.pairwise(lines) if later in beats]
    assert min(gaps) >= HEARTBEAT * 0.9, f"a heartbeat only when nothing was logged for a while: {gaps}"


def test_without_a_change_or_a_heartbeat_due_a_wait_stays_quiet(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path], logged: Callable[[], list[Line]]
) -> None:
    """The default heartbeat is minutes: a run that keeps its state for many polls is logged once."""
    emulator.scenario(RECONCILIATION_FLOW, processing_seconds=60)
    run_id = started(tableflow_conn, pdfs)
    run = FlowRunsHook(tableflow_conn).wait_for_run(
        RECONCILIATION_FLOW, run_id, deadline=time.time() + 4, poll_interval=0.05, on_review=waiting.OnReview.WAIT
    )
    assert run.state.value == "running"
    assert polls(emulator, run_id) >= 5
    assert [line.message for line in said(logged(), f"tableflow run {run_id} is ")] == [
        f"tableflow run {run_id} is processing (running); next check in 0.1 s."
    ]
    assert 60 <= waiting.HEARTBEAT_SECONDS <= 300, "a heartbeat every few minutes"


def test_the_sensor_logs_a_state_once_over_many_pokes_then_closes(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path], logged: Callable[[], list[Line]]
) -> None:
    emulator.scenario(RECONCILIATION_FLOW, processing_seconds=60)
    run_id = started(tableflow_conn, pdfs)
    sensor = FlowRunSensor(task_id="wait", flowruns_conn_id=tableflow_conn, run_id=run_id, poke_interval=0.05)
    assert not any(sensor.poke({}).is_done for _ in range(4))
    emulator.set_status(run_id, "completed")
    done = sensor.poke({})
    assert done.is_done and done.xcom_value is not None
    lines = logged()
    assert len(said(lines, f"tableflow run {run_id} is processing (running)")) == 1
    (closing,) = said(lines, f"tableflow run {run_id!r} of flow {RECONCILIATION_FLOW!r} ended succeeded")
    assert closing.message.endswith(f": {done.xcom_value['url']}")


@pytest.mark.parametrize("follow_run", [True, False], ids=["run-in-review", "answer-only"])
def test_the_review_trigger_logs_a_heartbeat_while_the_review_lasts(
    tableflow_conn: str,
    emulator: Emulator,
    pdfs: dict[str, Path],
    logged: Callable[[], list[Line]],
    monkeypatch: pytest.MonkeyPatch,
    follow_run: bool,
) -> None:
    monkeypatch.setattr(waiting, "HEARTBEAT_SECONDS", HEARTBEAT)
    monkeypatch.setattr(review_trigger, "ANSWER_POLL_SECONDS", 0.05)
    store = install(monkeypatch)
    run_id = started(tableflow_conn, pdfs, TABLEFLOW_REVIEW_FLOW)
    emulator.set_status(run_id, "review")
    ti_id = uuid4()
    store.upsert(ti_id, ["Accept"], "Review")
    trigger = FlowRunReviewTrigger(
        conn_id=tableflow_conn,
        platform="tableflow",
        flow_id=TABLEFLOW_REVIEW_FLOW,
        run_id=run_id,
        deadline=time.time() + 1.0,
        poll_interval=0.05,
        ti_id=str(ti_id),
        watch_answer=not follow_run,
        follow_run=follow_run,
    )
    assert run_trigger(trigger)["outcome"] == "timeout"

    lines = logged()
    if follow_run:
        assert len(said(lines, f"tableflow run {run_id} is review (needs_review)")) == 1
        beats = said(lines, f"tableflow run {run_id} is still review (needs_review), ")
    else:
        beats = said(lines, f"tableflow run {run_id} awaits an answer to its Required Action in Airflow, ")
    assert beats, lines
    assert all(re.search(r", [\d.]+ s into the wait; next check in [\d.]+ s\.$", b.message) for b in beats)
