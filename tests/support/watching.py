"""What the watcher tests share: flows per platform, runs started as a person would, and waiting on a watcher
for a bounded time. Imports on every supported Airflow (no Airflow 3.3-only module)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest

from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms.extend.emulator import EXTEND_FAILING_WORKFLOW, EXTEND_INVOICE_WORKFLOW
from airflow_flowruns.platforms.noxus.emulator import NOXUS_DOCUMENT_WORKFLOW, NOXUS_FAILING_WORKFLOW
from airflow_flowruns.platforms.stackai.emulator import STACKAI_FAILING_FLOW, STACKAI_FLOW, STACKAI_ORG
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_FAILING_FLOW, TABLEFLOW_SMALL_FILE_FLOW
from airflow_flowruns.triggers.watcher import FlowRunEventTrigger
from support.emulator import Emulator, set_connection

T = TypeVar("T")

FLOWS = {
    "tableflow": (TABLEFLOW_SMALL_FILE_FLOW, TABLEFLOW_FAILING_FLOW),
    "extend": (EXTEND_INVOICE_WORKFLOW, EXTEND_FAILING_WORKFLOW),
    "noxus": (NOXUS_DOCUMENT_WORKFLOW, NOXUS_FAILING_WORKFLOW),
    "stackai": (STACKAI_FLOW, STACKAI_FAILING_FLOW),
}
EXTRAS = {"stackai": {"org_id": STACKAI_ORG}}
FAST_POLL = 0.1
BOUND = 60.0
"""Seconds a test waits for events that should come within a few polls: a bound on a hang, not a timing."""


def connect(monkeypatch: pytest.MonkeyPatch, emulator: Emulator, platform: str) -> str:
    return set_connection(monkeypatch, f"{platform}_watch", platform, emulator.url, **EXTRAS.get(platform, {}))


def manual_runs(emulator: Emulator, platform: str, flow_id: str, count: int = 1) -> list[str]:
    """Runs started outside Airflow, as a person starts them in the platform's app."""
    response = emulator.control.post(f"/{platform}/flows/{flow_id}/manual-runs", json={"count": count})
    response.raise_for_status()
    ids: list[str] = response.json()["ids"]
    return ids


async def take(events: AsyncIterator[T], count: int, bound: float = BOUND) -> list[T]:
    taken: list[T] = []

    async def fill() -> None:
        async for event in events:
            taken.append(event)
            if len(taken) == count:
                return

    await asyncio.wait_for(fill(), bound)
    return taken


async def payloads(trigger: FlowRunEventTrigger, count: int) -> list[dict[str, Any]]:
    found = await take(trigger.run(), count)
    await FlowRunsHook.close_async_clients()
    return [event.payload for event in found]


async def started_watching(trigger: FlowRunEventTrigger, then: Callable[[], Any], count: int) -> list[dict[str, Any]]:
    """Start the watcher, let it take its first look, then act (start runs) and collect ``count`` events."""
    events = trigger.run()
    first = asyncio.ensure_future(take(events, count))
    await asyncio.sleep(trigger.poll_interval * 3)
    await asyncio.to_thread(then)
    found = await first
    await FlowRunsHook.close_async_clients()
    return [event.payload for event in found]


async def until(check: Callable[[], bool], bound: float = BOUND) -> None:
    deadline = time.monotonic() + bound
    while not check():
        assert time.monotonic() < deadline, "gave up waiting"
        await asyncio.sleep(0.02)


async def until_finished(emulator: Emulator, run_id: str) -> float:
    """When the run finished (unix seconds), once the emulator says it has."""
    finished: list[float] = []

    def done() -> bool:
        finished.extend(run["finished_at"] for run in emulator.runs() if run["id"] == run_id and run["finished_at"])
        return bool(finished)

    await until(done)
    return finished[0]


def logged(capsys: pytest.CaptureFixture[str], text: str, times: int) -> Callable[[], bool]:
    """Whether the watcher's log (structlog, on stdout) has said ``text`` at least ``times`` times so far."""
    output: list[str] = []

    def check() -> bool:
        output.append(capsys.readouterr().out)
        return "".join(output).count(text) >= times

    return check
