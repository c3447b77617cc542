"""Benchmark 3: many runs followed through an API that allows 5 requests/s per key.

Every run's final state must be seen, no task may fail, and after the first 429 the client must not send
faster than the limit: the connection's shared pacing (``max_requests_per_second``) and the pause after
a 429 keep the whole process under it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_RECONCILIATION_FLOW
from airflow_flowruns.triggers.flow_run import FlowRunTrigger
from benchmarks.common import Emulator


async def _follow_all(triggers: list[FlowRunTrigger]) -> list[dict[str, Any]]:
    async def one(trigger: FlowRunTrigger) -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    events = await asyncio.gather(*(one(t) for t in triggers))
    await FlowRunsHook.close_async_clients()
    return events


def run(emulator: Emulator, runs: int, limit: float, poll_interval: float) -> dict[str, Any]:
    emulator.reset()
    ids = emulator.seed(TABLEFLOW_RECONCILIATION_FLOW, runs, processing_seconds=1, processing_jitter_seconds=5)
    emulator.control.put("/rate-limit", json={"per_second": limit}).raise_for_status()
    conn_id = emulator.connect("bench_economy", max_requests_per_second=limit, max_retries=10)
    emulator.control.delete("/requests")
    before = emulator.stats()
    start = time.monotonic()
    deadline = time.time() + 3600
    triggers = [
        FlowRunTrigger(
            conn_id=conn_id,
            platform="tableflow",
            flow_id=None,
            run_id=i,
            deadline=deadline,
            poll_interval=poll_interval,
        )
        for i in ids
    ]
    events = asyncio.run(_follow_all(triggers))
    drain = time.monotonic() - start
    after = emulator.stats()
    emulator.control.put("/rate-limit", json={"per_second": None}).raise_for_status()
    log = emulator.control.get("/requests").json()
    limited = [i for i, r in enumerate(log) if r["status"] == 429]
    return {
        "runs": runs,
        "limit_per_s": limit,
        "requests": after["requests"] - before["requests"],
        "http_429": after["rate_limited"] - before["rate_limited"],
        "drain_s": drain,
        "rate_per_s": (after["requests"] - before["requests"]) / drain,
        "final_states_seen": sum(e["outcome"] == "settled" for e in events),
        "failed_tasks": sum(e["outcome"] != "settled" for e in events),
        "requests_after_first_429": len(log) - limited[0] if limited else 0,
    }
