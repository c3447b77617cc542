"""Answering the polls of every run on a connection from one change feed, in the triggerer.

Where a platform lists its runs by last change, newest first (``Platform.change_feed_call``; Extend), one
scan of that listing per poll interval tells which of the runs being waited on changed since the last
scan: the scan pages only back to the newest change the previous one saw (the watermark), less an
overlap for clock skew and equal timestamps. Polls are answered from what the feed said, and a run is
read on its own only when that cannot be enough:

* its first poll (the feed reports changes, so each run starts from what it was when first read);
* a change its summary cannot describe: any state but queued or running, since a failure's details,
  the outcome of a review and the metadata the XCom carries are only on the run itself;
* the safety net: a run the feed has not mentioned for ``SAFETY_NET_SECONDS`` (a missed update costs
  bounded staleness, not a hang), at most ``SAFETY_NET_READS_PER_SCAN`` per round of polls, stalest first;
* a scan that failed or could not vouch for every change back to its watermark (an HTTP error, an answer
  this provider cannot read, items out of order by more than the overlap, more changes than
  ``MAX_PAGES_PER_SCAN`` pages): every run it did not mention is read at its next poll, so no change is lost.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow_flowruns.client.batching import PollGatherer, ReadRun, Waiting, refuses_listing, settle
from airflow_flowruns.client.listing import PageWalk, change_pages
from airflow_flowruns.exceptions import FlowRunsError
from airflow_flowruns.platforms.base import ApiCall, ChangesPage, FlowRun, Platform, RunChange, RunState

log = logging.getLogger(__name__)

OVERLAP = timedelta(seconds=30)
"""How far behind the watermark each scan reaches: clock skew between the platform's writers, changes
stamped a little before they became visible, and runs changed at the same instant as the watermark."""
SAFETY_NET_SECONDS = 1800.0
"""A run the feed has not mentioned (nor a read confirmed) for this long is read on its own. A feed
that works misses nothing, so this only bounds the staleness of an update the listing failed to show."""
SAFETY_NET_READS_PER_SCAN = 5
"""At most this many safety-net reads per round of polls, so a quiet backlog of long runs stays within
budget (5 per 30 s interval is a sixth of a request per second)."""
MAX_PAGES_PER_SCAN = 20
"""Pages one scan reads at most (20,000 changes at Extend's largest page); beyond that it is incomplete."""
FIRST_READS_IN_FLIGHT = 4
"""First reads in flight at once: a backfill's thousands of first reads queue here rather than in the
connection's request slots, so scans and the reads that settle runs are not queued behind them."""
PREFETCH_SCANS_PER_INTERVAL = 6
"""Between two rounds of polls the feed scans this many times (every 5 s at a 30 s poll interval) and
starts the reads the changes it sees need, so they wait their turn under the rate limit while the
triggers sleep, and a poll finds the settled run already read. 0: scan only when polled."""
FORGET_AFTER_SECONDS = 6 * 3600.0
"""A run not polled for this long is forgotten (its trigger has gone); a later poll reads it afresh."""
DESCRIBED_BY_SUMMARY = frozenset({RunState.QUEUED, RunState.RUNNING})
"""States a summary tells completely; any other is read from the run itself."""


@dataclass
class _Followed:
    """What the feed knows of one run it answers polls for."""

    run: FlowRun
    confirmed: float
    """Monotonic time its state was last confirmed, by a read or by the feed mentioning it."""
    polled: float
    updated_at: datetime | None = None
    """The last change of it the feed applied (None: only read so far)."""
    must_read: bool = False
    """Its next poll reads it: a change the summary cannot describe, or a scan that could not vouch for it."""
    refreshing: asyncio.Task[FlowRun] | None = None
    """The read of it in flight, which every poll of it meanwhile waits for."""


WalkChangePages = Callable[[PageWalk[ChangesPage]], AsyncIterator[ChangesPage]]
"""The client's driver of a walk through the feed: any answer it cannot read is a :class:`FlowRunsError`."""


class _Inconsistent(Exception):
    """A page the feed cannot trust to be complete and in order."""


class ChangeFeed(PollGatherer):
    """One per connection and event loop: the scans, the watermark and what it knows of each run."""

    def __init__(self, platform: Platform, first_call: ApiCall, walk_pages: WalkChangePages, read_run: ReadRun) -> None:
        super().__init__()
        self._platform = platform
        self._first_call = first_call
        self._walk_pages = walk_pages
        self._read_run = read_run
        self._followed: dict[str, _Followed] = {}
        self._reading: dict[str, datetime] = {}
        """Runs whose first read is in flight, and when it was sent."""
        self._changed_while_reading: set[str] = set()
        """Runs a scan showed changed at about the time of their first read, or later."""
        self._scan_lock = asyncio.Lock()
        self._first_reads = asyncio.Semaphore(FIRST_READS_IN_FLIGHT)
        self._watermark: datetime | None = None
        self._first_read_floor: datetime | None = None
        """Before the first scan: when the earliest first read started, so that scan reaches back to it."""
        self._refused = False
        self._last_round: float | None = None
        self._interval: float | None = None
        """The poll interval, as the shortest time seen between two rounds of polls."""
        self._prefetcher: asyncio.Task[None] | None = None
        self.scans = 0
        self.failed_scans = 0

    async def get_run(self, run_id: str) -> FlowRun:
        followed = self._followed.get(run_id)
        if followed is None or self._refused:
            return await self._first_read(run_id)
        followed.polled = time.monotonic()
        return await self._gather(run_id)

    async def _first_read(self, run_id: str) -> FlowRun:
        started = datetime.now(UTC)
        async with self._first_reads:
            self._reading[run_id] = datetime.now(UTC)
            try:
                run = await self._read_run(run_id)
            finally:
                del self._reading[run_id]
                changed_meanwhile = run_id in self._changed_while_reading
                self._changed_while_reading.discard(run_id)
        if self._watermark is None:
            self._first_read_floor = min(started, self._first_read_floor or started)
        now = time.monotonic()
        if not run.state.is_final and not self._refused:
            # A scan that showed the run changed while the read was in flight may have seen a newer state
            # than the read did, and the watermark has moved past it: read once more rather than lose it.
            self._followed[run_id] = _Followed(run, confirmed=now, polled=now, must_read=changed_meanwhile)
        return run

    async def _answer(self, waiting: Waiting) -> None:
        self._learn_interval()
        async with self._scan_lock:  # one scan at a time; polls arriving meanwhile get a scan of their own
            await self._scan()
        reads = self._reads_needed(waiting)
        await asyncio.gather(
            *(self._answer_one(run_id, futures, run_id in reads) for run_id, futures in waiting.items())
        )
        self._forget_gone()

    async def _scan(self) -> None:
        """Read the feed back to the watermark, applying every change; mark what it could not vouch for."""
        floor = self._watermark or self._first_read_floor
        if floor is None or self._refused:
            return
        floor -= OVERLAP
        started = datetime.now(UTC)
        self.scans += 1
        walk = change_pages(self._platform, self._first_call, max_pages=MAX_PAGES_PER_SCAN)
        newest: datetime | None = None
        previous: datetime | None = None
        mentioned: set[str] = set()
        complete = False
        try:
            async for page in self._walk_pages(walk):
                for change in page.changes:
                    # Out of order by less than the overlap is skew the overlap already covers.
                    if previous is not None and change.updated_at > previous + OVERLAP:
                        raise _Inconsistent(f"run {change.id} changed at {change.updated_at}, listed after {previous}")
                    previous = min(change.updated_at, previous or change.updated_at)
                    newest = newest or change.updated_at
                    mentioned.add(change.id)
                    self._apply(change)
                if page.next_call is None or (page.changes and page.changes[-1].updated_at < floor):
                    complete = True
                    break
                if not page.changes:
                    raise _Inconsistent("an empty page that names a next one")
        except (FlowRunsError, _Inconsistent) as exc:
            self.failed_scans += 1
            if isinstance(exc, FlowRunsError) and refuses_listing(exc):
                self._refused = True  # a key that may read runs but not list them: every poll reads its run
            log.warning(
                "%s change feed scan failed (%s); the runs it did not show are read one by one.",
                self._platform.label,
                exc,
            )
        # The scan vouches for every change back to the floor, and a complete one for every change up to
        # when it started (its overlap covers the clocks' skew): the watermark never moves back.
        self._watermark = max(
            t for t in (newest, self._watermark, self._first_read_floor, started if complete else None) if t is not None
        )
        if not complete:
            for run_id, followed in self._followed.items():
                if run_id not in mentioned:
                    followed.must_read = True

    def _apply(self, change: RunChange) -> None:
        sent = self._reading.get(change.id)
        if sent is not None and change.updated_at >= sent - OVERLAP:
            self._changed_while_reading.add(change.id)
        followed = self._followed.get(change.id)
        if followed is None or (followed.updated_at is not None and change.updated_at <= followed.updated_at):
            if followed is not None:
                followed.confirmed = time.monotonic()
            return
        followed.updated_at = change.updated_at
        followed.confirmed = time.monotonic()
        if change.status == followed.run.status:
            return
        if change.state in DESCRIBED_BY_SUMMARY:
            update: dict[str, Any] = {"state": change.state, "status": change.status}
            if change.started_at is not None:
                update["started_at"] = change.started_at
            followed.run = followed.run.model_copy(update=update)
        else:
            followed.must_read = True

    def _reads_needed(self, waiting: Waiting) -> set[str]:
        """The waiting runs to read on their own: changes the feed cannot describe, then the safety net."""
        followed = {run_id: self._followed.get(run_id) for run_id in waiting}
        needed = {run_id for run_id, f in followed.items() if f is None or f.must_read}
        now = time.monotonic()
        stale = sorted(
            (f.confirmed, run_id)
            for run_id, f in followed.items()
            if f is not None and run_id not in needed and now - f.confirmed > SAFETY_NET_SECONDS
        )
        needed.update(run_id for _, run_id in stale[:SAFETY_NET_READS_PER_SCAN])
        return needed

    async def _answer_one(self, run_id: str, futures: list[asyncio.Future[FlowRun]], read: bool) -> None:
        followed = self._followed.get(run_id)
        try:
            if followed is None:
                run = await self._read_run(run_id)
            elif read or followed.refreshing is not None:
                run = await asyncio.shield(self._refresh(run_id))
            else:
                run = followed.run
        except Exception as exc:
            settle(futures, error=exc)
            return
        if run.state.is_final:
            self._followed.pop(run_id, None)
        settle(futures, run=run)

    def _refresh(self, run_id: str) -> asyncio.Task[FlowRun]:
        """Read a followed run on its own: one read however many ask while it is in flight."""
        followed = self._followed[run_id]
        if followed.refreshing is None:
            followed.must_read = False
            followed.refreshing = asyncio.get_running_loop().create_task(self._reread(run_id, followed))
            followed.refreshing.add_done_callback(_retrieved)
        return followed.refreshing

    async def _reread(self, run_id: str, followed: _Followed) -> FlowRun:
        try:
            run = await self._read_run(run_id)
        except BaseException:
            followed.must_read = True  # its next poll tries again, and gets the error if it persists
            raise
        finally:
            followed.refreshing = None
        followed.run, followed.confirmed = run, time.monotonic()
        return run

    def _learn_interval(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._last_round is not None and now - self._last_round > 0.001:
            self._interval = min(self._interval or math.inf, now - self._last_round)
        self._last_round = now
        if PREFETCH_SCANS_PER_INTERVAL and self._interval and (self._prefetcher is None or self._prefetcher.done()):
            self._prefetcher = asyncio.get_running_loop().create_task(self._prefetch(self._interval))
            self._prefetcher.add_done_callback(_retrieved)

    async def _prefetch(self, interval: float) -> None:
        """Scan between rounds of polls and start the reads the changes need, while any run is followed."""
        while self._followed:
            await asyncio.sleep(interval / PREFETCH_SCANS_PER_INTERVAL)
            async with self._scan_lock:
                await self._scan()
            for run_id in [run_id for run_id, f in self._followed.items() if f.must_read]:
                self._refresh(run_id)
            self._forget_gone()

    async def aclose(self) -> None:
        """Stop scanning between polls (the client is closing)."""
        if self._prefetcher is not None:
            self._prefetcher.cancel()
            await asyncio.gather(self._prefetcher, return_exceptions=True)

    def _forget_gone(self) -> None:
        cutoff = time.monotonic() - FORGET_AFTER_SECONDS
        for run_id in [run_id for run_id, f in self._followed.items() if f.polled < cutoff]:
            del self._followed[run_id]


def _retrieved(task: asyncio.Task[Any]) -> None:
    """A background read or scan that failed is logged by the client or answered at the next poll."""
    if not task.cancelled():
        task.exception()
