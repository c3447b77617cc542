"""Extend's change feed against a misbehaving Extend on loopback (the hostile server answering the list-runs
and get-run paths its own way): stamps from a clock minutes ahead, two updates stamped alike, a listing that
shows a run's end before a read of the run does, a listing that keeps showing an old update, and pages far
larger than asked for or slow to parse.

Polls are made by hand, one round after another, on the feed's injected clocks: nothing waits on time.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import pytest

from airflow_flowruns.client import AsyncFlowRunsClient, HttpOptions, async_client, errors, feed
from airflow_flowruns.client.feed_state import FeedClock
from airflow_flowruns.platforms import PLATFORMS
from airflow_flowruns.platforms.base import ConnectionSettings
from airflow_flowruns.platforms.extend import api as extend_api
from support.hostile_server import Exchange, HostileServer

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
"""The triggerer's wall clock when the runs are first read."""
HOUR = timedelta(hours=1)
LAG_BOUND = 0.25
"""Seconds the event loop may stall at most while the feed reads a page (generous: a page parsed on the
loop stalls it for twice as long or more)."""
WAITED = "workflow_run_waited"
_CONNECTIONS = itertools.count()


@dataclass
class Listed:
    status: str
    stamp: datetime


class FakeExtend:
    """Extend's list-runs and get-run paths answered from two views that need not agree: what the listing
    shows (``listed``, sorted by stamp, newest first) and what a read of a run shows (``read``)."""

    def __init__(self) -> None:
        self.listed: dict[str, Listed] = {}
        self.read: dict[str, str] = {}
        self.listing_body: bytes | None = None
        """When set, the answer to every listing."""

    def set(self, run_id: str, status: str, stamp: datetime, read: str | None = None) -> None:
        self.listed[run_id] = Listed(status, stamp)
        self.read[run_id] = read or status

    def __call__(self, exchange: Exchange) -> None:
        path, _, query = exchange.path.partition("?")
        if path == "/workflow_runs":
            exchange.send(200, self.listing_body or self.page(parse_qs(query)))
            return
        run_id = path.rsplit("/", 1)[-1]
        run = {"object": "workflow_run", "id": run_id, "status": self.read[run_id], "metadata": {"batch": "b-1"}}
        exchange.send(200, json.dumps(run).encode())

    def page(self, query: dict[str, list[str]]) -> bytes:
        size, offset = int(query["maxPageSize"][0]), int(query.get("nextPageToken", ["0"])[0])
        ordered = sorted(self.listed.items(), key=lambda item: (item[1].stamp, item[0]), reverse=True)
        data = [
            {"object": "workflow_run", "id": run_id, "status": listed.status, "updatedAt": listed.stamp.isoformat()}
            for run_id, listed in ordered[offset : offset + size]
        ]
        body: dict[str, Any] = {"object": "list", "data": data}
        if offset + size < len(ordered):
            body["nextPageToken"] = str(offset + size)
        return json.dumps(body).encode()


@dataclass
class Clock:
    wall: datetime = T0
    monotonic: float = 0.0


@pytest.fixture
def extend(hostile: HostileServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeExtend]:
    monkeypatch.setattr(feed, "PREFETCH_SCANS_PER_INTERVAL", 0)  # each round's requests are its own
    fake = FakeExtend()
    hostile.requests.clear()
    hostile.answer = fake
    try:
        yield fake
    finally:
        hostile.answer = None


Scenario = Callable[[AsyncFlowRunsClient], Awaitable[None]]


def run(hostile: HostileServer, clock: Clock, scenario: Scenario) -> None:
    """``scenario`` with a client of its own on the hostile server, its feed on ``clock``."""

    async def main() -> None:
        settings = ConnectionSettings(f"feed_hostile_{next(_CONNECTIONS)}", "sk_feed_hostile", hostile.url)
        client = AsyncFlowRunsClient(PLATFORMS["extend"](settings), HttpOptions(timeout=10, max_retries=0))
        assert client._feed is not None
        client._feed.clock = FeedClock(wall=lambda: clock.wall, monotonic=lambda: clock.monotonic)
        try:
            await scenario(client)
        finally:
            await client.aclose()

    asyncio.run(main())


async def poll(client: AsyncFlowRunsClient, *ids: str) -> dict[str, str]:
    """One round: every run polled at once, as triggers on the same tick poll; the status each poll got."""
    runs = await asyncio.gather(*(client.get_run(None, run_id) for run_id in ids))
    return {run.id: run.status for run in runs}


def reads(hostile: HostileServer) -> list[str]:
    """The runs read on their own since the last call, in order."""
    done = [r["path"].rsplit("/", 1)[-1] for r in hostile.requests if r["path"].startswith("/workflow_runs/")]
    hostile.requests.clear()
    return done


def test_an_update_stamped_in_the_future_does_not_carry_the_watermark_past_later_changes(
    extend: FakeExtend, hostile: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(extend_api, "CHANGES_PAGE_SIZE", 2)
    clock = Clock()
    extend.set(WAITED, "PROCESSING", T0 - HOUR)

    async def scenario(client: AsyncFlowRunsClient) -> None:
        await poll(client, WAITED)
        extend.set("workflow_run_skewed", "PROCESSING", T0 + 10 * timedelta(minutes=1))  # a writer 10 min ahead
        clock.wall = T0 + timedelta(seconds=30)
        assert await poll(client, WAITED) == {WAITED: "PROCESSING"}
        extend.set("workflow_run_other", "PROCESSED", T0 + timedelta(seconds=50))
        extend.set(WAITED, "PROCESSED", T0 + timedelta(seconds=45))  # on the second page, after the other
        clock.wall = T0 + timedelta(seconds=60)
        reads(hostile)
        assert await poll(client, WAITED) == {WAITED: "PROCESSED"}, "the scan read back past the future stamp"
        assert reads(hostile) == [WAITED]

    run(hostile, clock, scenario)


def test_a_true_change_stamped_before_a_future_stamp_of_the_same_run_is_applied(
    extend: FakeExtend, hostile: HostileServer
) -> None:
    clock = Clock()
    extend.set(WAITED, "PENDING", T0 - HOUR)

    async def scenario(client: AsyncFlowRunsClient) -> None:
        await poll(client, WAITED)
        extend.set(WAITED, "PROCESSING", T0 + timedelta(minutes=10))  # started, stamped by a clock ahead
        clock.wall = T0 + timedelta(seconds=30)
        assert await poll(client, WAITED) == {WAITED: "PROCESSING"}
        extend.set(WAITED, "PROCESSED", T0 + timedelta(seconds=45))  # ended, stamped by a true clock
        clock.wall = T0 + timedelta(seconds=60)
        reads(hostile)
        assert await poll(client, WAITED) == {WAITED: "PROCESSED"}
        assert reads(hostile) == [WAITED]

    run(hostile, clock, scenario)


def test_two_updates_of_one_run_stamped_alike_are_both_changes(extend: FakeExtend, hostile: HostileServer) -> None:
    clock = Clock()
    extend.set(WAITED, "PENDING", T0 - HOUR)
    stamp = T0 + timedelta(seconds=10)  # a platform stamping in whole seconds: started and ended in one

    async def scenario(client: AsyncFlowRunsClient) -> None:
        await poll(client, WAITED)
        extend.set(WAITED, "PROCESSING", stamp)
        clock.wall = T0 + timedelta(seconds=30)
        assert await poll(client, WAITED) == {WAITED: "PROCESSING"}
        extend.set(WAITED, "PROCESSED", stamp)
        clock.wall = T0 + timedelta(seconds=60)
        reads(hostile)
        assert await poll(client, WAITED) == {WAITED: "PROCESSED"}
        assert reads(hostile) == [WAITED]

    run(hostile, clock, scenario)


def test_changes_stamped_like_the_watermark_are_read_across_pages(
    extend: FakeExtend, hostile: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed, "OVERLAP", timedelta(0))  # the floor is the watermark itself
    monkeypatch.setattr(extend_api, "CHANGES_PAGE_SIZE", 1)
    clock = Clock()
    ids = ["workflow_run_a", "workflow_run_b"]
    for run_id in ids:
        extend.set(run_id, "PENDING", T0 - HOUR)

    async def scenario(client: AsyncFlowRunsClient) -> None:
        await poll(client, *ids)
        clock.wall = T0 + timedelta(seconds=30)
        await poll(client, *ids)  # a complete scan: the watermark is when it started
        for run_id in ids:
            extend.set(run_id, "PROCESSING", clock.wall)  # stamped as it started, visible only after
        clock.wall = T0 + timedelta(seconds=60)
        assert await poll(client, *ids) == dict.fromkeys(ids, "PROCESSING")

    run(hostile, clock, scenario)


def test_a_read_behind_the_listing_is_read_again_until_it_agrees(
    extend: FakeExtend, hostile: HostileServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    extend.set(WAITED, "PROCESSING", T0 - HOUR)

    async def scenario(client: AsyncFlowRunsClient) -> None:
        await poll(client, WAITED)
        extend.set(WAITED, "PROCESSED", T0 + timedelta(seconds=10), read="PROCESSING")  # the read lags
        reads(hostile)
        for seconds in (30, 60):
            clock.wall = T0 + timedelta(seconds=seconds)
            assert await poll(client, WAITED) == {WAITED: "PROCESSING"}
            assert reads(hostile) == [WAITED], "the listing shows an end no read has shown yet"
        extend.read[WAITED] = "PROCESSED"
        clock.wall = T0 + timedelta(seconds=90)
        assert await poll(client, WAITED) == {WAITED: "PROCESSED"}
        assert reads(hostile) == [WAITED]

    with caplog.at_level(logging.INFO, logger="airflow_flowruns.client.feed_state"):
        run(hostile, clock, scenario)
    lagging = [r.getMessage() for r in caplog.records if "still says PROCESSING" in r.getMessage()]
    assert len(lagging) == 1, "said once, not at every read"


def test_the_safety_net_reads_a_run_the_feed_keeps_showing_unchanged(
    extend: FakeExtend, hostile: HostileServer
) -> None:
    clock = Clock()
    extend.set(WAITED, "PROCESSING", T0)

    async def scenario(client: AsyncFlowRunsClient) -> None:
        await poll(client, WAITED)
        extend.read[WAITED] = "PROCESSED"  # the listing never shows its end
        reads(hostile)
        for monotonic in (600.0, 1200.0, feed.SAFETY_NET_SECONDS):
            clock.monotonic = monotonic
            assert await poll(client, WAITED) == {WAITED: "PROCESSING"}, "every scan shows it, unchanged"
        assert reads(hostile) == []
        clock.monotonic = feed.SAFETY_NET_SECONDS + 1.0
        assert await poll(client, WAITED) == {WAITED: "PROCESSED"}, "due since its last read"
        assert reads(hostile) == [WAITED]

    run(hostile, clock, scenario)


def huge_listing(items: int) -> bytes:
    """A listing page of ``items`` small summaries, each one valid."""
    stamp = T0.isoformat()
    data = [{"id": f"r{i}", "status": "PROCESSING", "updatedAt": stamp} for i in range(items)]
    return json.dumps({"object": "list", "data": data, "nextPageToken": "more"}).encode()


async def max_loop_lag(work: Awaitable[Any]) -> float:
    """The longest the event loop was late for a 5 ms tick while ``work`` ran, the garbage collector paused:
    a collection that tens of thousands of new objects set off holds every thread whichever allocated them,
    and what is measured is what the feed does on the loop."""
    lags = [0.0]

    async def ticker() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - before - 0.005)

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    gc.disable()
    try:
        await work
    finally:
        gc.enable()
        ticking.cancel()
    return max(lags)


def test_a_page_far_larger_than_asked_for_is_refused_unparsed(
    extend: FakeExtend, hostile: HostileServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    ids = [f"workflow_run_{i}" for i in range(3)]
    for run_id in ids:
        extend.set(run_id, "PROCESSING", T0 - HOUR)
    extend.listing_body = huge_listing(50_000)
    lag: list[float] = []

    async def scenario(client: AsyncFlowRunsClient) -> None:
        await poll(client, *ids)
        reads(hostile)
        clock.wall = T0 + timedelta(seconds=30)
        lag.append(await max_loop_lag(poll(client, *ids)))
        assert client._feed is not None and client._feed.failed_scans == 1

    with caplog.at_level(logging.WARNING, logger="airflow_flowruns.client.feed"):
        run(hostile, clock, scenario)
    listings = [r["path"] for r in hostile.requests if r["path"].startswith("/workflow_runs?")]
    assert len(listings) == 1 and parse_qs(listings[0].partition("?")[2])["maxPageSize"] == ["500"]
    assert sorted(reads(hostile)) == ids, "the runs the scan could not show are read on their own"
    assert any("a page of 50000 runs" in r.getMessage() and "at most 500" in r.getMessage() for r in caplog.records)
    assert lag[0] < LAG_BOUND, f"the loop stalled {lag[0]:.3f} s"


def slow(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` taking twice the lag bound more (a slow machine, an answer near its size limit)."""

    def slowed(*args: Any) -> Any:
        time.sleep(2 * LAG_BOUND)
        return function(*args)

    return slowed


@pytest.mark.parametrize(
    ("module", "name", "listing"),
    [
        (extend_api.Extend, "parse_changes", None),
        (errors, "_json_body", b'{"object": "list", "data": []' + b" " * async_client.DECODE_ON_LOOP_BYTES + b"}"),
    ],
    ids=["a page parsed", "an answer over DECODE_ON_LOOP_BYTES decoded"],
)
def test_slow_work_on_a_page_leaves_the_event_loop_running(
    module: Any,
    name: str,
    listing: bytes | None,
    extend: FakeExtend,
    hostile: HostileServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    extend.set(WAITED, "PENDING", T0 - HOUR)
    lag: list[float] = []

    async def scenario(client: AsyncFlowRunsClient) -> None:
        await poll(client, WAITED)
        monkeypatch.setattr(module, name, slow(getattr(module, name)))
        extend.listing_body = listing
        clock.wall = T0 + timedelta(seconds=30)
        answered: list[dict[str, str]] = []

        async def one_round() -> None:
            answered.append(await poll(client, WAITED))

        lag.append(await max_loop_lag(one_round()))
        assert answered == [{WAITED: "PENDING"}]
        assert client._feed is not None and client._feed.failed_scans == 0

    run(hostile, clock, scenario)
    assert lag[0] < LAG_BOUND, f"the loop stalled {lag[0]:.3f} s"
