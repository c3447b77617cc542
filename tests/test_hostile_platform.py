"""A broken or hostile platform never freezes, floods or leaks.

Each misbehaviour of the hostile server (tests/support/hostile_server.py) goes through the worker's path (the
hook reading a run) and through a trigger in an event loop, and each asserts: the memory held at the
peak stays bounded (tracemalloc), the deadline holds (the error or the event arrives), the error says
what happened, and the key appears nowhere (exception with its chain, log, event).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from airflow_flowruns.client.ratelimit import RequestScheduler, scheduler_for
from airflow_flowruns.exceptions import FlowRunsConfigError, FlowRunsError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.triggers.flow_run import FlowRunTrigger
from support.emulator import set_connection
from support.hostile_server import FLOW_ID, MODES, RETRY_AFTER_SHAPES, RUN_ID, HostileServer, completed_run
from support.measure import HANG_GUARD, measured
from support.runs import collect_events

KEY = "hostile-test-key-4c1d9e"
LIMIT = 1024 * 1024
MEMORY_BOUND = 16 * 1024 * 1024
"""Held at the peak while reading any answer; unbounded reading would hold the whole answer (1 TiB
declared, endless, or 256 MiB decompressed)."""
RETRY_MAX_WAIT = 0.05
"""Only so that a regression fails the test instead of freezing the suite; no test asserts on time."""


@dataclass(frozen=True)
class Expected:
    worker: str
    """What the worker's error says (a regular expression)."""
    event: str
    """The trigger's event: ``error`` (then its message matches ``worker``) or ``timeout``."""


SIZE = Expected("'get run' answered with more than 1048576 bytes", "error")
DEADLINE = Expected("'get run' failed \\(no response\\): ReadTimeout: no complete answer", "timeout")
RATE_LIMITED = Expected("'get run' failed \\(HTTP 429\\): slow down", "timeout")
EXPECTED: dict[str, Expected] = {
    "huge body": Expected("'get run' answered with more than 1048576 bytes.*1099511627776 declared", "error"),
    "endless chunked body": SIZE,
    "gzip bomb": SIZE,
    "trickled body": DEADLINE,
    "trickled headers": DEADLINE,
    "echoed credentials in an error": Expected("HTTP 401.*invalid credentials: Bearer \\*\\*\\*", "error"),
    "echoed credentials in an HTML title": Expected("HTTP 502.*HTML page titled 'Bad Bearer \\*\\*\\*'", "timeout"),
    "echoed credentials as a status": Expected("run status 'Bearer \\*\\*\\*'", "error"),
    "foreign run": Expected("asked for run 'run_asked_for'.*answered with run 'someone_elses_run'", "error"),
    "run of another flow": Expected("of flow 'flow_asked_for'.*of flow 'another_flow'", "error"),
    "redirect with a run in its body": Expected("HTTP 302.*redirect to 'http://127.0.0.1:9/elsewhere'", "error"),
    "deep JSON": Expected("'get run' answered HTTP 200 with JSON nested deeper than 64 levels", "error"),
    "deep metadata": Expected("'get run' answered HTTP 200 with JSON nested deeper than 64 levels", "error"),
    "wrongly shaped run": Expected("TableFlow returned a run this provider cannot read: id", "error"),
    "list instead of a run": Expected("TableFlow returned a run this provider cannot read", "error"),
    **{
        f"Retry-After {name}": Expected("'get run' failed \\(HTTP 429\\): slow down", "timeout")
        for name in RETRY_AFTER_SHAPES
    },
}
assert EXPECTED.keys() == MODES.keys()


_CONNECTIONS = itertools.count()


@pytest.fixture
def conn_id(hostile: HostileServer, monkeypatch: pytest.MonkeyPatch) -> str:
    hostile.requests.clear()
    return set_connection(
        monkeypatch,
        f"hostile_{next(_CONNECTIONS)}",  # a connection of its own: no pace learned from an earlier test's 429s
        "tableflow",
        hostile.url,
        password=KEY,
        timeout=1,
        max_response_bytes=LIMIT,
        max_retries=1,
        retry_min_wait=0.01,
        retry_max_wait=RETRY_MAX_WAIT,
    )


def failure(work: Callable[[], object]) -> tuple[BaseException, int]:
    """What ``work()`` raised (a hostile answer must never be accepted) and the memory peak meanwhile."""

    def run() -> BaseException:
        try:
            work()
        except BaseException as exc:
            return exc
        raise AssertionError("a hostile answer was accepted")

    return measured(run)


def followed(trigger: FlowRunTrigger) -> dict[str, Any]:
    """The payload of the one event ``trigger`` fires in an event loop of its own, the memory held at the
    peak meanwhile checked."""

    async def follow() -> list[Any]:
        try:
            return await asyncio.wait_for(collect_events(trigger), HANG_GUARD)
        finally:
            await FlowRunsHook.close_async_clients()

    events, peak = measured(lambda: asyncio.run(follow()))
    assert len(events) == 1, events
    assert peak < MEMORY_BOUND, f"{peak / 2**20:.1f} MiB held at the peak"
    payload: dict[str, Any] = events[0].payload
    return payload


def assert_no_key(*texts: str) -> None:
    for text in texts:
        assert KEY not in text


@pytest.mark.parametrize("mode", MODES, ids=list(MODES))
def test_worker_path(mode: str, hostile: HostileServer, conn_id: str, caplog: pytest.LogCaptureFixture) -> None:
    hostile.mode = mode
    caplog.set_level(logging.DEBUG)

    error, peak = failure(lambda: FlowRunsHook(conn_id).get_run(FLOW_ID, RUN_ID))
    assert isinstance(error, FlowRunsError), repr(error)
    assert peak < MEMORY_BOUND, f"{peak / 2**20:.1f} MiB held at the peak"
    assert re.search(EXPECTED[mode].worker, str(error)), str(error)
    assert KEY in hostile.requests[0]["headers"]["authorization"]  # the key was sent: an echo is a real echo
    assert_no_key("".join(traceback.format_exception(error)), caplog.text)
    # the pause after a 429 kept its cap (retry_max_wait), whatever the platform asked; the rest is the
    # connection's lowered rate after a 429 (hooks/ratelimit.py)
    assert scheduler_for(conn_id, None).reserve() < 10


@pytest.mark.parametrize("mode", MODES, ids=list(MODES))
def test_trigger_path(mode: str, hostile: HostileServer, conn_id: str, caplog: pytest.LogCaptureFixture) -> None:
    hostile.mode = mode
    caplog.set_level(logging.DEBUG)
    trigger = FlowRunTrigger(
        conn_id=conn_id,
        platform="tableflow",
        flow_id=FLOW_ID,
        run_id=RUN_ID,
        deadline=time.time() + 3,
        poll_interval=1,
    )
    payload = followed(trigger)
    expected = EXPECTED[mode]
    assert payload["outcome"] == expected.event, payload
    if expected.event == "error":
        assert re.search(expected.worker, payload["message"]), payload["message"]
    assert_no_key(json.dumps(payload), caplog.text)


def test_slow_polls_do_not_starve_the_other_triggers_of_a_connection(
    hostile: HostileServer, conn_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trickled answers for four runs, on a connection of two request slots: each holds a slot at most one
    request timeout, so the fifth trigger's run is still read, and every trigger ends with its event."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_HOSTILE_SLOTS",
        json.dumps(
            {
                "conn_type": "tableflow",
                "password": KEY,
                "host": hostile.url,
                "extra": {"timeout": 1, "max_concurrent_requests": 2, "max_retries": 0},
            }
        ),
    )
    hostile.mode = "trickled body"
    hostile.modes_by_run = {RUN_ID: completed_run}
    deadline = time.time() + 6

    def trigger(run_id: str) -> FlowRunTrigger:
        return FlowRunTrigger(
            conn_id="hostile_slots",
            platform="tableflow",
            flow_id=None,
            run_id=run_id,
            deadline=deadline,
            poll_interval=1,
        )

    async def follow_all() -> list[list[Any]]:
        try:
            slow = [asyncio.ensure_future(collect_events(trigger(f"slow_{i}"))) for i in range(4)]
            while len(hostile.requests) < 2:  # both slots taken by trickled answers before the fifth trigger starts
                await asyncio.sleep(0.01)
            return await asyncio.wait_for(asyncio.gather(*slow, collect_events(trigger(RUN_ID))), HANG_GUARD)
        finally:
            await FlowRunsHook.close_async_clients()

    try:
        events = asyncio.run(follow_all())
    finally:
        hostile.modes_by_run = {}
    outcomes = [[event.payload["outcome"] for event in trigger_events] for trigger_events in events]
    assert outcomes == [["timeout"]] * 4 + [["settled"]]


@pytest.mark.parametrize("run_id", ["../../flows/other/run", "a?b#c", "50%off", "x/y"])
def test_an_id_is_one_path_segment(run_id: str, hostile: HostileServer, conn_id: str) -> None:
    hostile.mode = "foreign run"
    with pytest.raises(FlowRunsError, match="answered with run 'someone_elses_run'"):
        FlowRunsHook(conn_id).get_run(None, run_id)
    prefix, _, segment = hostile.requests[0]["path"].partition("/flows/runs/")
    assert prefix in ("", "/v2") and segment  # the API base path, if any, then the run read
    assert "/" not in segment and "?" not in segment and "#" not in segment


@pytest.mark.parametrize("run_id", ["", ".", ".."])
def test_an_id_that_names_no_resource_is_refused(run_id: str, hostile: HostileServer, conn_id: str) -> None:
    with pytest.raises(FlowRunsConfigError, match="cannot name a run or flow"):
        FlowRunsHook(conn_id).get_run(None, run_id)
    assert hostile.requests == []


@pytest.mark.parametrize("seconds", [3600.0, math.inf, -5.0, None])
def test_the_pause_after_a_429_never_exceeds_its_cap(seconds: float | None) -> None:
    scheduler = RequestScheduler(None)
    scheduler.pause(seconds, cap=60)
    assert 0 <= scheduler.reserve() <= 60
