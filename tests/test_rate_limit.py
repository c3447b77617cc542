"""Rate limits: the emulator's per-key token bucket, and the client's shared per-connection pacing."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_flowruns.client.options import HttpOptions
from airflow_flowruns.client.ratelimit import (
    DECREASE_FACTOR,
    MIN_RATE,
    PROBE_GROWTH_PER_SECOND,
    RECOVERY_PER_SECOND,
    TARGET_SHARE,
    AdaptiveRate,
    RequestScheduler,
)
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms.start import StartRequest
from support.emulator import Emulator, set_connection
from support.runs import RECONCILIATION_FLOW


def rate_limit(emulator: Emulator, per_second: float | None) -> None:
    emulator.control.put("/rate-limit", json={"per_second": per_second}).raise_for_status()


def test_emulator_answers_429_with_retry_after_beyond_the_limit(emulator: Emulator, tableflow_conn: str) -> None:
    rate_limit(emulator, 2)
    client = FlowRunsHook(tableflow_conn).client._http
    statuses = [client.get("/flows") for _ in range(6)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited and limited[0].headers["Retry-After"] == "1"
    assert limited[0].json() == {"error": "Too Many Requests", "message": "Request rate limit exceeded"}
    assert emulator.control.get("/stats").json()["rate_limited"] == len(limited)


def test_many_triggers_on_one_limited_connection_all_finish_without_stampeding(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, pdfs: dict[str, Path]
) -> None:
    """40 polls in flight against a 10 requests/s limit, paced client-side at the same rate."""
    conn = set_connection(monkeypatch, "tf_paced", "tableflow", emulator.url, max_requests_per_second=10, max_retries=5)
    emulator.scenario(RECONCILIATION_FLOW, processing_seconds=0)
    hook = FlowRunsHook(conn)
    run_ids = [
        hook.start_run(StartRequest(RECONCILIATION_FLOW, {"purchase_order": pdfs["po"], "invoice": pdfs["inv"]})).id
        for _ in range(3)
    ]
    rate_limit(emulator, 10)
    emulator.clear_requests()

    async def poll_all() -> list[str]:
        client = await FlowRunsHook.get_async_client(conn)
        runs = await asyncio.gather(*(client.get_run(None, run_ids[i % 3]) for i in range(40)))
        return [run.status for run in runs]

    assert asyncio.run(poll_all()) == ["completed"] * 40
    assert emulator.control.get("/stats").json()["rate_limited"] <= 1, "paced requests stay under the limit"


def test_a_429_holds_every_request_on_the_connection() -> None:
    scheduler = RequestScheduler(None)
    assert scheduler.reserve() == 0
    scheduler.pause(30, cap=60)
    assert 29 < scheduler.reserve() <= 30
    assert scheduler.reserve() > 29, "not only the request that met the 429"


def test_requests_are_spaced_by_the_limit() -> None:
    scheduler = RequestScheduler(4)
    waits = [scheduler.reserve() for _ in range(5)]
    assert waits[0] == 0
    assert [round(b - a, 2) for a, b in itertools.pairwise(waits)] == [0.25] * 4


def test_the_limit_comes_from_the_connection_and_is_shared(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "tf_shared", "tableflow", emulator.url, max_requests_per_second=5)
    first, second = FlowRunsHook("tf_shared").client, FlowRunsHook("tf_shared").client
    assert first is not second and first._scheduler is second._scheduler
    assert first._scheduler.interval == pytest.approx(0.2)


def test_a_connection_limited_by_429s_slows_down_and_later_speeds_up(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No max_requests_per_second: the rate is learnt from the 429s of a 5 requests/s limit."""
    conn = set_connection(monkeypatch, "extend_limited", "extend", emulator.url, max_retries=8)
    rate_limit(emulator, 5)
    client = FlowRunsHook(conn).client
    for _ in range(30):
        client.call(client.platform.test_call())
    adaptive = client._scheduler.adaptive
    assert emulator.control.get("/stats").json()["rate_limited"] >= 1
    assert adaptive.decreases >= 1 and adaptive.rate is not None
    lowered = adaptive.rate
    assert 0 < client._scheduler.interval <= 1 / lowered
    later = adaptive.current(time.monotonic() + 60)
    assert later is not None and later > lowered, "back up"


def test_a_guess_probes_upward_and_a_whole_window_of_answers_sets_the_ceiling() -> None:
    rate = AdaptiveRate()
    assert rate.current(0.0) is None, "no limit before the first 429"
    rate.limited(0.0, hold=1.0)
    assert rate.current(0.0) is None, "a 429 before any accepted answer measures nothing"
    for _ in range(5):  # a bucket's banked second, accepted in the first instant
        rate.accepted(1.0)
    rate.limited(1.0, hold=1.0)
    assert rate.ceiling is None and rate.rate == pytest.approx(10.0), "half of 5 over a quarter second, a guess"
    assert rate.current(11.0) == pytest.approx(10.0 * math.exp(10 * PROBE_GROWTH_PER_SECOND)), "probing upward"
    for tick in range(100):  # then 10 answers a second accepted for ten seconds
        rate.accepted(2.1 + tick / 10)
    rate.limited(12.0, hold=1.0)
    assert rate.ceiling == pytest.approx(10.0) and rate.rate == pytest.approx(5.0), "measured over a whole window"
    rate.limited(12.5, hold=1.0)
    assert rate.rate == pytest.approx(5.0), "the 429s of requests already in flight are the same event"
    assert rate.current(15.0) == pytest.approx(5.0 * math.exp(3 * RECOVERY_PER_SECOND)), "multiplicative recovery"
    settled = rate.current(300.0)
    ceiling = rate.ceiling_at(300.0)
    assert ceiling is not None and settled == pytest.approx(TARGET_SHARE * ceiling), "settles below it"
    rate.limited(301.0, hold=1.0)
    assert rate.ceiling is not None and rate.ceiling < 9.1, "nothing accepted lately: the rate in force"
    assert rate.rate == pytest.approx(rate.ceiling / 2), "halved from the rate in force"


def test_the_cap_still_caps_the_learnt_rate() -> None:
    scheduler = RequestScheduler(2)
    scheduler.adaptive.rate = scheduler.adaptive.ceiling = 50.0
    assert scheduler.interval == pytest.approx(0.5)


class FakeClock:
    """Time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def served(scheduler: RequestScheduler, clock: FakeClock, woken_at: float, waiting: int) -> list[float]:
    """When each of ``waiting`` requests leaves, all of them woken together at ``woken_at`` and asking again
    whenever they are told to wait, as ``await_turn`` does."""
    clock.now = woken_at
    asks = [woken_at] * waiting
    sent: list[float] = []
    while asks:
        clock.now = min(asks)
        index = asks.index(clock.now)
        delay = scheduler.clear_to_send()
        if delay <= 0:
            sent.append(clock.now)
            asks.pop(index)
        else:
            asks[index] = clock.now + delay
    return sent


def test_requests_woken_late_together_leave_one_interval_apart() -> None:
    clock = FakeClock()
    scheduler = RequestScheduler(4, clock=clock)
    waits = [scheduler.reserve() for _ in range(5)]
    assert waits == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    sent = served(scheduler, clock, woken_at=clock.now + 2.0, waiting=5)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert len(sent) == 5 and min(gaps) >= 0.25 - 1e-9, gaps


def test_requests_already_in_line_keep_to_a_429_pause_and_the_lowered_rate() -> None:
    clock = FakeClock()
    scheduler = RequestScheduler(None, clock=clock)
    for tick in range(101):  # 10 answers a second accepted for ten seconds: a learnt ceiling of 10/s
        clock.now = 100.0 + tick / 10
        scheduler.answered(200, None)
    in_line = [scheduler.reserve() for _ in range(3)]
    assert in_line == [0, 0, 0], "no limit learnt yet: every place in line is now"
    limited_at = clock.now
    scheduler.answered(429, 2.0)
    lowered, ceiling = scheduler.adaptive.rate, scheduler.adaptive.ceiling
    assert lowered is not None and ceiling is not None and lowered == pytest.approx(ceiling / 2) and lowered < 6
    sent = served(scheduler, clock, woken_at=limited_at, waiting=3)
    assert sent[0] >= limited_at + 2.0, "not before the Retry-After"
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert min(gaps) >= 1 / 6, "at the lowered rate, not all at once"


class TokenBucket:
    """A platform's limit as the emulator keeps it: ``per_second`` tokens a second, a second's worth banked."""

    def __init__(self, per_second: float, now: float) -> None:
        self.per_second = per_second
        self.tokens = per_second
        self.stamp = now

    def answer(self, now: float) -> tuple[int, float | None]:
        self.tokens = min(self.per_second, self.tokens + (now - self.stamp) * self.per_second)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 200, None
        return 429, float(max(1, math.ceil((1 - self.tokens) / self.per_second)))


@pytest.mark.parametrize(
    ("limit", "accepted_latency", "limited_latency"),
    [(5.0, 0.05, 0.05), (5.0, 0.2, 0.01), (5.0, 0.5, 0.01), (25.0, 0.2, 0.01), (75.0, 0.05, 0.05)],
    ids=["answers-alike", "429s-answered-first", "slow-answers", "scale-plan", "enterprise-plan"],
)
def test_a_start_up_burst_settles_below_an_unknown_limit_within_the_first_minute(
    limit: float, accepted_latency: float, limited_latency: float
) -> None:
    """A client's every concurrent request asking at once, again and again, against a token bucket on a fake
    clock: no 429 after the first minute, and the rate settles between half the limit and the limit. The
    shapes of the first answers that mislead a measure: a burst accepted in the first instant (the bucket's
    banked second) reads as a rate above the limit, and 429s answered before the accepted answers (a
    platform refuses faster than it serves) read as one far below it, which would starve the connection."""
    clock = FakeClock()
    start = clock.now
    scheduler = RequestScheduler(None, clock=clock)
    bucket = TokenBucket(limit, start)
    workers, horizon = HttpOptions().max_concurrent_requests, 600.0
    events: list[tuple[float, int, str]] = []  # (when, worker, "ask" or "answer:<status>:<retry-after>")
    for worker in range(workers):
        heapq.heappush(events, (start + scheduler.reserve(), worker, "ask"))
    limited: list[float] = []
    sent: list[float] = []
    while events:
        clock.now, worker, what = heapq.heappop(events)
        if clock.now > start + horizon:
            break
        if what == "ask":
            delay = scheduler.clear_to_send()
            if delay > 0:
                heapq.heappush(events, (clock.now + delay, worker, "ask"))
                continue
            sent.append(clock.now)
            status, retry_after = bucket.answer(clock.now)
            latency = limited_latency if status == 429 else accepted_latency
            heapq.heappush(events, (clock.now + latency, worker, f"answer:{status}:{retry_after}"))
        else:
            _, code, wait = what.split(":")
            if code == "429":
                limited.append(clock.now - start)
            scheduler.answered(int(code), None if wait == "None" else float(wait))
            heapq.heappush(events, (clock.now + scheduler.reserve(), worker, "ask"))
    assert limited, "the burst met the limit"
    assert max(limited) < 60, f"429s after the first minute, at {[round(t) for t in limited if t >= 60]} s"
    last_minute = sum(1 for at in sent if at > start + horizon - 60) / 60
    assert 0.5 * limit <= last_minute <= limit, f"settled at {last_minute:.2f}/s against a {limit:g}/s limit"


ACCEPTED_BEFORE = 19.0
"""The rate a platform accepted from the connection before and after its 429s, in the tests below."""
Answering = Callable[[int, float], tuple[int, float | None]]
"""How a simulated platform answers the n-th request, sent at a given time: a status and its Retry-After."""


def demand(scheduler: RequestScheduler, clock: FakeClock, until: float, answer: Answering) -> list[float]:
    """One request after another, as fast as ``ACCEPTED_BEFORE`` a second and as the scheduler lets them
    leave, each answered at once, until the clock reaches ``until``; the rate allowed after each answer."""
    rates: list[float] = []
    sent = itertools.count()
    while clock.now < until:
        while (delay := scheduler.clear_to_send()) > 0:
            clock.now += delay
        status, retry_after = answer(next(sent), clock.now)
        scheduler.answered(status, retry_after)
        allowed = scheduler.adaptive.current(clock.now)
        rates.append(math.inf if allowed is None else allowed)
        clock.now += 1 / ACCEPTED_BEFORE
    return rates


def accepted(_: int, __: float) -> tuple[int, float | None]:
    return 200, None


def accepting_for_a_minute(scheduler: RequestScheduler, clock: FakeClock) -> float:
    """A minute of every request accepted at ``ACCEPTED_BEFORE`` a second; when it ends."""
    demand(scheduler, clock, clock.now + 60, accepted)
    return clock.now


@pytest.mark.parametrize("limited_answers", [5, 10])
def test_a_burst_of_429s_leaves_the_rate_near_what_was_accepted_and_it_recovers_within_a_minute(
    limited_answers: int,
) -> None:
    """A platform accepting 19 requests a second refuses for a few seconds (each 429 met after the pause of
    the one before, so each is a congestion event of its own), then accepts again."""
    clock = FakeClock()
    scheduler = RequestScheduler(None, clock=clock)
    start = accepting_for_a_minute(scheduler, clock)
    refused = itertools.count()

    def burst(_: int, __: float) -> tuple[int, float | None]:
        return (429, 1.0) if next(refused) < limited_answers else (200, None)

    during = demand(scheduler, clock, start + limited_answers + 2, burst)
    assert scheduler.adaptive.decreases >= limited_answers / 2, "429s met one after another, not at once"
    floor = DECREASE_FACTOR * ACCEPTED_BEFORE * 0.8
    assert min(during) >= floor, f"fell to {min(during):.2f}/s during the burst"
    after = demand(scheduler, clock, clock.now + 60, accepted)
    assert min(after) >= floor and after[-1] >= 15, f"{after[-1]:.2f}/s a minute after the burst"


def test_a_platform_refusing_every_other_request_does_not_drive_the_rate_to_the_floor() -> None:
    """A minute of every other answer a 429 (without Retry-After), after a minute of all accepted."""
    clock = FakeClock()
    scheduler = RequestScheduler(None, clock=clock)
    start = accepting_for_a_minute(scheduler, clock)
    during = demand(scheduler, clock, start + 60, lambda sent, _: (429, None) if sent % 2 else (200, None))
    assert min(during) >= DECREASE_FACTOR * ACCEPTED_BEFORE * 0.5, f"fell to {min(during):.2f}/s"
    assert scheduler.adaptive.decreases > 20, "refused all minute long"
    after = demand(scheduler, clock, clock.now + 60, accepted)
    assert after[-1] >= 15, f"{after[-1]:.2f}/s a minute after"


@pytest.mark.parametrize("idle", [3 * 3600.0, 7 * 86400.0, 10 * 365 * 86400.0], ids=["hours", "a week", "years"])
@pytest.mark.parametrize("whole_window", [False, True], ids=["guessed", "ceiling-learnt"])
def test_a_429_then_any_time_idle_leaves_requests_free_to_go(idle: float, whole_window: bool) -> None:
    """A 429 early in a connection's life (a guess) or after a whole window (a learnt ceiling), then the
    connection idle: the rate grown meanwhile stays a number, in the worker's and the triggerer's wait."""
    clock = FakeClock()
    scheduler = RequestScheduler(None, clock=clock)
    demand(scheduler, clock, clock.now + (12 if whole_window else 2), accepted)
    scheduler.answered(429, 1.0)
    assert scheduler.adaptive.rate is not None and (scheduler.adaptive.ceiling is not None) is whole_window
    clock.now += idle
    scheduler.wait()
    clock.now += 1 / MIN_RATE  # the next turn, at the slowest rate there is
    asyncio.run(scheduler.await_turn())
    allowed = scheduler.adaptive.current(clock.now)
    assert allowed is None or math.isfinite(allowed)
    assert math.isfinite(scheduler.interval)
    scheduler.answered(429, 1.0)
    scheduler.answered(200, None)
    assert scheduler.clear_to_send() >= 0
