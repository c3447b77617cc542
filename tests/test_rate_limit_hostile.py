"""A burst of 429s from a platform on loopback, through a real client: the connection is not starved after it.

The hostile server accepts every read, refuses a run of them with 429 and ``Retry-After: 1``, then accepts
again. The connection's scheduler runs on a clock the test moves forward between requests, so a minute of
traffic at 19 requests a second takes a second or two, and every assertion reads what the scheduler learnt
(its rate and ceiling) or counts answers, never the time things took.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest

from airflow_flowruns.client import ratelimit
from airflow_flowruns.client.ratelimit import DECREASE_FACTOR, RequestScheduler
from airflow_flowruns.exceptions import FlowRunsError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from support.emulator import set_connection
from support.hostile_server import FLOW_ID, RUN_ID, Exchange, HostileServer, run_body
from test_hostile_platform import KEY

ACCEPTED_BEFORE = 19.0
"""The rate the platform accepts before and after its burst of 429s."""
REFUSED = 8
"""The 429s of the burst, each met after the pause of the one before: a congestion event each."""
PAUSE_ASKED = 1.0
"""The burst's ``Retry-After``: the clock moves past it before the next request."""


class MovedClock:
    """The monotonic clock plus however far the test moved it: a real wait still passes, and the test makes
    simulated seconds pass between requests without sleeping through them."""

    def __init__(self) -> None:
        self.moved = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.moved


class Platform:
    """Answers the hostile server's requests: the run asked for, or a 429 while refusals remain."""

    def __init__(self) -> None:
        self.refusals = 0
        self.answered = {200: 0, 429: 0}

    def __call__(self, ex: Exchange) -> None:
        if self.refusals > 0:
            self.refusals -= 1
            self.answered[429] += 1
            ex.send(429, b'{"detail": "slow down"}', Retry_After=f"{PAUSE_ASKED:g}")
        else:
            self.answered[200] += 1
            ex.send(200, run_body())


@pytest.fixture
def platform(hostile: HostileServer) -> Iterator[Platform]:
    answering = Platform()
    hostile.answer = answering
    yield answering
    hostile.answer = None


_CONNECTIONS = itertools.count()


@pytest.fixture
def connection(
    platform: Platform, hostile: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, RequestScheduler, MovedClock]:
    """A connection to the hostile server whose process-wide scheduler runs on a :class:`MovedClock`."""
    conn_id = set_connection(
        monkeypatch, f"burst_{next(_CONNECTIONS)}", "tableflow", hostile.url, password=KEY, max_retries=0
    )
    clock = MovedClock()
    scheduler = RequestScheduler(None, clock=clock)
    monkeypatch.setitem(ratelimit._schedulers, (conn_id, None), scheduler)
    return conn_id, scheduler, clock


def read_for(hook: FlowRunsHook, scheduler: RequestScheduler, clock: MovedClock, seconds: float) -> float:
    """Read the run as often as ``ACCEPTED_BEFORE`` a second and the scheduler allows, for ``seconds`` of the
    moved clock (before each read it moves on by one interval, so the scheduler never makes it wait); the
    rate of reads on that clock, which the real time each read takes keeps a little below the aim."""
    start = clock()
    reads = 0
    while clock() < start + seconds:
        clock.moved += max(1 / ACCEPTED_BEFORE, scheduler.interval)
        hook.get_run(FLOW_ID, RUN_ID)
        reads += 1
    return reads / (clock() - start)


def test_a_burst_of_429s_does_not_starve_the_connection(
    platform: Platform, connection: tuple[str, RequestScheduler, MovedClock]
) -> None:
    conn_id, scheduler, clock = connection
    hook = FlowRunsHook(conn_id)
    before = read_for(hook, scheduler, clock, 12)  # a whole window of answers: the next 429 is measured, not guessed

    platform.refusals = REFUSED
    lowest = float("inf")
    for _ in range(REFUSED):
        clock.moved += PAUSE_ASKED + 0.05
        with pytest.raises(FlowRunsError, match="HTTP 429"):
            hook.get_run(FLOW_ID, RUN_ID)
        lowest = min(lowest, 1 / scheduler.interval)
    assert platform.answered[429] == REFUSED and scheduler.adaptive.decreases == REFUSED, "one event per 429"
    assert lowest >= DECREASE_FACTOR * before * 0.8, f"lowered to {lowest:.2f}/s by the burst from {before:.2f}/s"

    after = read_for(hook, scheduler, clock, 30)
    recovered = 1 / scheduler.interval
    assert recovered >= 0.8 * before, f"{recovered:.2f}/s half a minute after the burst, {before:.2f}/s before"
    assert after >= DECREASE_FACTOR * before, f"{after:.2f}/s read after the burst, {before:.2f}/s before"
