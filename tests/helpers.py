"""Small helpers shared by test modules."""

from __future__ import annotations

import asyncio
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

RECONCILIATION_FLOW = "dk4g1tUg1uHLs8YU"


async def collect_events(trigger: BaseTrigger) -> list[TriggerEvent]:
    return [event async for event in trigger.run()]


def run_trigger(trigger: BaseTrigger) -> dict[str, Any]:
    """Run a trigger to its end as the triggerer would, and check it fired exactly one event."""
    events = asyncio.run(collect_events(trigger))
    assert len(events) == 1, events
    return events[0].payload
