"""FlowRunTrigger: serialization, restarts, transient errors, deadlines and the shared client."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.module_loading import import_string
from pytest_mock import MockerFixture

from airflow_flowruns.client import AsyncFlowRunsClient
from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms.start import StartRequest
from airflow_flowruns.triggers.flow_run import FlowRunTrigger, PollClock
from support.emulator import API_KEY, Emulator
from support.runs import RECONCILIATION_FLOW, collect_events, run_trigger


def started_run(conn_id: str, pdfs: dict[str, Path]) -> str:
    request = StartRequest(flow_id=RECONCILIATION_FLOW, files={"purchase_order": pdfs["po"], "invoice": pdfs["inv"]})
    return FlowRunsHook(conn_id).start_run(request).id


def trigger_for(conn_id: str, run_id: str, **kwargs: Any) -> FlowRunTrigger:
    return FlowRunTrigger(
        **{
            "conn_id": conn_id,
            "platform": "tableflow",
            "flow_id": RECONCILIATION_FLOW,
            "run_id": run_id,
            "deadline": time.time() + 60,
            "poll_interval": 0.05,
            **kwargs,
        }
    )


def test_serialize_round_trip_holds_only_plain_values_and_no_key(tableflow_conn: str) -> None:
    trigger = trigger_for(tableflow_conn, "r1", on_review="wait")
    classpath, kwargs = trigger.serialize()
    assert import_string(classpath) is FlowRunTrigger
    assert kwargs == {
        "conn_id": tableflow_conn,
        "platform": "tableflow",
        "flow_id": RECONCILIATION_FLOW,
        "run_id": "r1",
        "deadline": trigger.deadline,
        "poll_interval": 0.05,
        "on_review": "wait",
    }
    assert all(isinstance(v, str | int | float | type(None)) for v in kwargs.values())
    assert API_KEY not in repr(kwargs)
    assert FlowRunTrigger(**kwargs).serialize() == (classpath, kwargs)


@pytest.mark.parametrize("poll_interval", [1e-9, 0.001, 0, -1, float("nan"), float("inf")])
def test_a_poll_interval_under_the_floor_is_refused_when_the_trigger_is_made(
    tableflow_conn: str, poll_interval: float
) -> None:
    """A custom operator deferring to the trigger is held to ``[flowruns] min_poll_interval`` (0.01 s in
    this suite) as the operator, sensor and watcher are: refused at construction, before it defers."""
    with pytest.raises(FlowRunsConfigError, match=r"poll_interval must be"):
        trigger_for(tableflow_conn, "r1", poll_interval=poll_interval)


def test_interrupted_trigger_recreated_from_serialize_keeps_its_deadline(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path]
) -> None:
    """A triggerer restart: cancel the running trigger mid-poll, re-create it, and let it finish."""
    emulator.scenario(RECONCILIATION_FLOW, processing_seconds=60)
    run_id = started_run(tableflow_conn, pdfs)
    first = trigger_for(tableflow_conn, run_id)
    _, kwargs = first.serialize()

    async def interrupt() -> None:
        task = asyncio.ensure_future(collect_events(first))
        while len([r for r in emulator.requests() if r["method"] == "GET"]) < 2:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(interrupt())
    assert emulator.runs()[0]["status"] == "processing", "a cancelled trigger must not touch the run"

    emulator.set_status(run_id, "completed")
    again = FlowRunTrigger(**kwargs)
    assert again.deadline == first.deadline
    event = run_trigger(again)
    assert event["outcome"] == "settled" and event["run"]["state"] == "succeeded"


def test_transient_errors_do_not_end_the_trigger(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path]
) -> None:
    emulator.scenario(RECONCILIATION_FLOW, processing_seconds=0.1)
    run_id = started_run(tableflow_conn, pdfs)
    emulator.fault("/v2/flows/runs/", 503, '{"error": "Unavailable", "message": "maintenance"}', count=6)
    event = run_trigger(trigger_for(tableflow_conn, run_id))
    assert event["outcome"] == "settled" and event["run"]["status"] == "completed"
    assert sum(r["status"] == 503 for r in emulator.requests()) == 6


def test_permanent_error_ends_the_trigger_with_an_error_event(tableflow_conn: str) -> None:
    event = run_trigger(trigger_for(tableflow_conn, "noSuchRun0000000"))
    assert event["outcome"] == "error" and "404" in event["message"] and "noSuchRun0000000" in event["message"]


def test_unknown_status_ends_the_trigger_with_an_error_event(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path]
) -> None:
    run_id = started_run(tableflow_conn, pdfs)
    emulator.set_status(run_id, "paused_by_admin")
    event = run_trigger(trigger_for(tableflow_conn, run_id))
    assert event["outcome"] == "error" and "'paused_by_admin'" in event["message"]


def test_timeout_is_reported_only_after_one_last_check(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path]
) -> None:
    emulator.scenario(RECONCILIATION_FLOW, processing_seconds=60)
    run_id = started_run(tableflow_conn, pdfs)
    emulator.clear_requests()
    event = run_trigger(trigger_for(tableflow_conn, run_id, deadline=time.time() - 1))
    assert event["outcome"] == "timeout" and event["run"]["status"] == "processing"
    assert len(emulator.requests()) == 1, "the status is checked once more before a timeout"


def test_a_run_finished_at_the_deadline_is_not_a_timeout(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path]
) -> None:
    run_id = started_run(tableflow_conn, pdfs)
    emulator.set_status(run_id, "completed")
    event = run_trigger(trigger_for(tableflow_conn, run_id, deadline=time.time() - 1))
    assert event["outcome"] == "settled"


def test_triggers_on_one_connection_share_one_client_per_event_loop(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path], mocker: MockerFixture
) -> None:
    emulator.scenario(RECONCILIATION_FLOW, processing_seconds=0.2)
    run_ids = [started_run(tableflow_conn, pdfs) for _ in range(5)]
    made = mocker.spy(AsyncFlowRunsClient, "__init__")

    async def follow_all() -> None:
        events = await asyncio.gather(*(collect_events(trigger_for(tableflow_conn, r)) for r in run_ids))
        assert [e[0].payload["outcome"] for e in events] == ["settled"] * 5

    asyncio.run(follow_all())
    assert made.call_count == 1
    asyncio.run(follow_all())
    assert made.call_count == 2, "a new event loop gets its own client"


def test_poll_clock_wakes_everything_due_in_one_tick_together() -> None:
    """Sleepers due anywhere in one tick all wake at that tick's end: never before they are due, and not at
    their own instants."""
    tick = 0.2

    async def scenario() -> list[tuple[float, float, float]]:
        clock = PollClock.of_running_loop()
        loop = asyncio.get_running_loop()
        start = clock.next_tick(loop.time(), tick) + tick
        woke: list[tuple[float, float, float]] = []

        async def sleeper(when: float) -> None:
            await clock.sleep_until(when, tick)
            woke.append((when, clock.next_tick(when, tick), loop.time()))

        await asyncio.gather(*(sleeper(start + offset) for offset in (0.01, 0.1, 0.19, 0.25)))
        return woke

    woke = asyncio.run(scenario())
    assert len({boundary for _, boundary, _ in woke}) == 2, "three share the first tick, one is in the next"
    for when, boundary, at in woke:
        assert when <= boundary <= at < boundary + 0.1, (when, boundary, at)
