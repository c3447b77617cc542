"""Answering the polls of every run on a connection from one change feed, in the triggerer.

Where a platform lists its runs by last change, newest first (``Platform.change_feed_call``; Extend), one
scan of that listing per poll interval tells which of the runs being waited on changed since the last
scan: the scan pages only back to the watermark, less ``OVERLAP``. Polls are answered from what the feed
said (``client/feed_state.py``), and a run is read on its own only when that cannot be enough:

* its first poll (the feed reports changes, so each run starts from what it was when first read);
* a change its summary cannot describe: any state but queued or running, since a failure's details,
  the outcome of a review and the metadata the XCom carries are only on the run itself;
* a read that shows less than the listing did (the listing shows the run ended, the read still shows it
  running): the read is older than the listing, and the run is read again at each poll until a read
  agrees, so a run the listing shows ended is never taken back for a running one;
* the safety net: every ``SAFETY_NET_SECONDS`` since the run was last read on its own, whatever the feed
  said of it meanwhile (a missed update costs bounded staleness, not a hang), at most
  ``SAFETY_NET_READS_PER_SCAN`` per round of polls, stalest first;
* a scan that failed or could not vouch for every change back to its watermark (an HTTP error, an answer
  this provider cannot read or a page of more changes than it asked for, items out of order by more than
  the overlap, more changes than ``MAX_PAGES_PER_SCAN`` pages): every run it did not mention is read at
  its next poll, so no change is lost.

The platform's stamps come from its clock, not the triggerer's: the watermark is the newest change a
scan vouches for but never later than the local clock when that scan started, so an update stamped
minutes in the future cannot carry it past the true changes that follow. Each page is parsed in a
worker thread, so parsing a page never holds the event loop every trigger of the triggerer shares.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from airflow_flowruns.client.batching import PollGatherer, ReadRun, Waiting, refuses_listing, settle
from airflow_flowruns.client.feed_state import DESCRIBED_BY_SUMMARY, FeedClock, Followed
from airflow_flowruns.client.listing import PageWalk, change_pages
from airflow_flowruns.exceptions import FlowRunsError
from airflow_flowruns.platforms.base import ApiCall, ChangesPage, FlowRun, Platform, RunChange

log = logging.getLogger(__name__)

OVERLAP = timedelta(seconds=30)
"""How far behind the watermark each scan reaches: skew between the platform's writers and the triggerer's
clock, changes stamped a little before they became visible, and changes stamped like the watermark. The
watermark never passes the local clock, so a platform clock ahead of it costs nothing; one behind it by
more than this can hide a change past the first page of a scan until the safety net reads the run."""
SAFETY_NET_SECONDS = 1800.0
"""Every run is read on its own at least this often, counted from its last read, whatever the feed said of
it meanwhile. A feed that works misses nothing, so this only bounds the staleness of an update the listing
failed to show, including for a run the listing keeps showing with an old update."""
SAFETY_NET_READS_PER_SCAN = 5
"""At most this many safety-net reads per round of polls, so a quiet backlog of long runs stays within
budget (5 per 30 s interval is a sixth of a request per second)."""
MAX_PAGES_PER_SCAN = 40
"""Pages one scan reads at most (20,000 changes at Extend's feed page of 500); beyond that it is incomplete."""
FIRST_READS_IN_FLIGHT = 4
"""First reads in flight at once: a backfill's thousands of first reads queue here rather than in the
connection's request slots, so scans and the reads that settle runs are not queued behind them."""
PREFETCH_SCANS_PER_INTERVAL = 6
"""Between two rounds of polls the feed scans this many times (every 5 s at a 30 s poll interval) and
starts the reads the changes it sees need, so they wait their turn under the rate limit while the
triggers sleep, and a poll finds the settled run already read. 0: scan only when polled."""
FORGET_AFTER_SECONDS = 6 * 3600.0
"""A run not polled for this long is forgotten (its trigger has gone); a later poll reads it afresh."""

Call = Callable[[ApiCall], Awaitable[Any]]
"""The client's call (``AsyncFlowRunsClient.call``): one call, retried as any is, to its decoded body."""


class _Inconsistent(Exception):
    """A page the feed cannot trust to be complete and in order."""


@dataclass
class _Seen:
    """What one scan has seen so far, kept when a later page fails it."""

    mentioned: set[str] = field(default_factory=set)
    newest: datetime | None = None


class ChangeFeed(PollGatherer):
    """One per connection and event loop: the scans, the watermark and what it knows of each run."""

    def __init__(
        self, platform: Platform, first_call: ApiCall, call: Call, read_run: ReadRun, clock: FeedClock | None = None
    ) -> None:
        super().__init__()
        self._platform = platform
        self._first_call = first_call
        self._call = call
        self._read_run = read_run
        self.clock = clock or FeedClock()
        self._followed: dict[str, Followed] = {}
        self._reading: dict[str, datetime] = {}
        """Runs whose first read is in flight, and when it was sent."""
        self._changed_while_reading: dict[str, RunChange] = {}
        """The update a scan showed of a run at about the time of its first read, or later."""
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
        followed.polled = self.clock.monotonic()
        return await self._gather(run_id)

    async def _first_read(self, run_id: str) -> FlowRun:
        started = self.clock.wall()
        async with self._first_reads:
            self._reading[run_id] = self.clock.wall()
            try:
                run = await self._read_run(run_id)
            finally:
                self._reading.pop(run_id, None)
                change = self._changed_while_reading.pop(run_id, None)
        if self._watermark is None:
            self._first_read_floor = min(started, self._first_read_floor or started)
        if not run.state.is_final and not self._refused:
            now = self.clock.monotonic()
            followed = self._followed[run_id] = Followed(run, read_at=now, polled=now)
            if change is not None and change.status != run.status:
                # A scan that showed the run changed while the read was in flight may have seen a newer state
                # than the read did, and the watermark has moved past it: read once more rather than lose it.
                followed.must_read = True
                followed.awaiting = None if change.state in DESCRIBED_BY_SUMMARY else change
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
        started = self.clock.wall()
        self.scans += 1
        seen = _Seen()
        complete = False
        try:
            complete = await self._read_back_to(floor - OVERLAP, seen)
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
        # when it started (its overlap covers the clocks' skew). The watermark moves back only with the local
        # clock, and never past it: a stamp in the future vouches for nothing after it.
        vouched = (seen.newest, self._watermark, self._first_read_floor, started if complete else None)
        self._watermark = min(started, max(t for t in vouched if t is not None))
        if not complete:
            for run_id, followed in self._followed.items():
                if run_id not in seen.mentioned:
                    followed.must_read = True

    async def _read_back_to(self, floor: datetime, seen: _Seen) -> bool:
        """Apply the feed's pages down to the first change older than ``floor``; whether the scan got there
        (or to the last page) within ``MAX_PAGES_PER_SCAN`` pages."""
        walk = change_pages(self._platform, self._first_call, max_pages=MAX_PAGES_PER_SCAN)
        previous: datetime | None = None
        async for page in self._pages(walk):
            for change in page.changes:
                # Out of order by less than the overlap is skew the overlap already covers.
                if previous is not None and change.updated_at > previous + OVERLAP:
                    raise _Inconsistent(f"run {change.id} changed at {change.updated_at}, listed after {previous}")
                previous = min(change.updated_at, previous or change.updated_at)
                seen.newest = seen.newest or change.updated_at
                seen.mentioned.add(change.id)
                self._apply(change)
            if page.next_call is None or (page.changes and page.changes[-1].updated_at < floor):
                return True
            if not page.changes:
                raise _Inconsistent("an empty page that names a next one")
        return False

    async def _pages(self, walk: PageWalk[ChangesPage]) -> AsyncIterator[ChangesPage]:
        """Drive ``walk`` as the client's ``walk_pages`` does, but parse each page in a worker thread: a page
        of hundreds of summaries is milliseconds of validation that every trigger on the loop would wait for,
        and an answer with more changes than asked for is refused there unparsed (``parse_changes``)."""
        for call in walk:
            body = await self._call(call)
            yield await asyncio.to_thread(walk.send, body)

    def _apply(self, change: RunChange) -> None:
        sent = self._reading.get(change.id)
        if sent is not None and change.updated_at >= sent - OVERLAP:
            self._changed_while_reading[change.id] = change
        followed = self._followed.get(change.id)
        if followed is not None:
            followed.listed(change)

    def _reads_needed(self, waiting: Waiting) -> set[str]:
        """The waiting runs to read on their own: changes the feed cannot describe, then the safety net."""
        followed = {run_id: self._followed.get(run_id) for run_id in waiting}
        needed = {run_id for run_id, f in followed.items() if f is None or f.must_read}
        now = self.clock.monotonic()
        due = sorted(
            (f.read_at, run_id)
            for run_id, f in followed.items()
            if f is not None and run_id not in needed and now - f.read_at > SAFETY_NET_SECONDS
        )
        needed.update(run_id for _, run_id in due[:SAFETY_NET_READS_PER_SCAN])
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

    async def _reread(self, run_id: str, followed: Followed) -> FlowRun:
        try:
            run = await self._read_run(run_id)
        except BaseException:
            followed.must_read = True  # its next poll tries again, and gets the error if it persists
            raise
        finally:
            followed.refreshing = None
        followed.read(run, self.clock.monotonic())
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
        """Scan between rounds of polls and start the reads the changes need, while any run is followed; a
        run whose last read lagged the listing waits for its poll."""
        while self._followed:
            await asyncio.sleep(interval / PREFETCH_SCANS_PER_INTERVAL)
            async with self._scan_lock:
                await self._scan()
            for run_id in [run_id for run_id, f in self._followed.items() if f.must_read and not f.stale_reads]:
                self._refresh(run_id)
            self._forget_gone()

    async def aclose(self) -> None:
        """Stop scanning between polls (the client is closing)."""
        if self._prefetcher is not None:
            self._prefetcher.cancel()
            await asyncio.gather(self._prefetcher, return_exceptions=True)

    def _forget_gone(self) -> None:
        cutoff = self.clock.monotonic() - FORGET_AFTER_SECONDS
        for run_id in [run_id for run_id, f in self._followed.items() if f.polled < cutoff]:
            del self._followed[run_id]


def _retrieved(task: asyncio.Task[Any]) -> None:
    """A background read or scan that failed is logged by the client or answered at the next poll."""
    if not task.cancelled():
        task.exception()
