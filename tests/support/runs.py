"""Small helpers shared by test modules."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import Context, TaskDeferred
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_flowruns.exceptions import FlowRunFailedError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.operators.flow_run import FlowRunOperator
from airflow_flowruns.triggers.flow_run import FlowRunTrigger

RECONCILIATION_FLOW = "dk4g1tUg1uHLs8YU"
FLOW_RUN_XCOM_KEYS = {
    "id",
    "flow_id",
    "platform",
    "state",
    "status",
    "error",
    "url",
    "metadata",
    "created_at",
    "started_at",
    "ended_at",
    "duration_ms",
    "reviewed_by",
    "usage",
}
"""The keys of the run a ``FlowRunOperator`` pushes to XCom (and ``FlowRunsExportOperator`` writes a row of)."""


async def collect_events(trigger: BaseTrigger) -> list[TriggerEvent]:
    return [event async for event in trigger.run()]


def run_trigger(trigger: BaseTrigger) -> dict[str, Any]:
    """Run a trigger to its end as the triggerer would, and check it fired exactly one event."""
    events = asyncio.run(collect_events(trigger))
    assert len(events) == 1, events
    return events[0].payload


def finish(op: FlowRunOperator, context: Context) -> dict[str, Any]:
    """Run the task to its end the way Airflow would, through the triggerer when it defers."""
    try:
        return op.execute(context)
    except TaskDeferred as deferred:
        return op.execute_complete(context, run_trigger(deferred.trigger))


def check_review_policy(op: FlowRunOperator, context: Context, expected: str, failure: str) -> None:
    """A run stopped for review under ``op``'s ``on_review``: the task fails with ``failure`` in its message
    when ``expected`` is "error", else it ends with ``expected`` as the run's state or raw status."""
    if expected == "error":
        with pytest.raises(FlowRunFailedError, match=failure):
            finish(op, context)
        return
    result = finish(op, context)
    assert expected in (result["state"], result["status"])


def follow(
    conn_id: str,
    platform: str,
    flow_id: str,
    ids: list[str],
    poll_interval: float = 0.4,
    trigger: type[FlowRunTrigger] = FlowRunTrigger,
) -> list[dict[str, Any]]:
    """Follow runs with one trigger each in one event loop, as the triggerer does; each fires exactly one event."""
    triggers = [
        trigger(
            conn_id=conn_id,
            platform=platform,
            flow_id=flow_id,
            run_id=run_id,
            deadline=time.time() + 60,
            poll_interval=poll_interval,
        )
        for run_id in ids
    ]

    async def all_of_them() -> list[list[TriggerEvent]]:
        try:
            return list(await asyncio.gather(*(collect_events(t) for t in triggers)))
        finally:
            await FlowRunsHook.close_async_clients()

    events = asyncio.run(all_of_them())
    assert all(len(each) == 1 for each in events)
    return [each[0].payload for each in events]
