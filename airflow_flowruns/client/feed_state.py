"""What the change feed knows of one run it answers polls for, and how an update the listing shows or a
read of the run changes it (``client/feed.py`` scans and answers the polls).

The listing and the run's own page are two views of the platform that need not agree at the same instant:
the listing may show a run ended while a read of the run still shows it running. Final states do not go
back, so such a read is older than the listing, and the run is read again rather than taken back for
running. Each update is known by its stamp and its status, not by its stamp alone: two updates of a run
stamped alike (a platform stamping in whole seconds) are two changes, and so is an update stamped before
the one seen last, which is how the stamp after one from a clock running ahead looks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from airflow_flowruns.platforms.base import FlowRun, RunChange, RunState

log = logging.getLogger(__name__)

DESCRIBED_BY_SUMMARY = frozenset({RunState.QUEUED, RunState.RUNNING})
"""States a summary tells completely; any other is read from the run itself."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class FeedClock:
    """The feed's clocks: the wall clock the platform's stamps are weighed against (the watermark never
    passes it), and a monotonic one for the safety net and for forgetting runs no longer polled."""

    wall: Callable[[], datetime] = _utc_now
    monotonic: Callable[[], float] = time.monotonic


@dataclass
class Followed:
    """What the feed knows of one run it answers polls for."""

    run: FlowRun
    read_at: float
    """Monotonic time it was last read on its own. The safety net counts from it: what the feed said of the
    run meanwhile does not put it off, since a listing that keeps showing an old update is what it is for."""
    polled: float
    seen: tuple[datetime, str] | None = None
    """The last update the feed applied, as its stamp and status: every scan within the overlap shows it
    again, and only another update is a change."""
    must_read: bool = False
    """Its next poll reads it: a change the summary cannot describe, a read older than the listing, or a
    scan that could not vouch for it."""
    awaiting: RunChange | None = None
    """An update the listing showed that only a read can complete (a state the summary cannot describe),
    until a read shows it or a final state."""
    stale_reads: int = 0
    """Reads in a row that showed less than ``awaiting``: the run is read again at its polls, not between
    them, so a platform whose reads lag its listing costs one read a poll interval, no more."""
    refreshing: asyncio.Task[FlowRun] | None = None
    """The read of it in flight, which every poll of it meanwhile waits for."""

    def listed(self, change: RunChange) -> None:
        """Apply an update the listing shows, unless it is the one applied last."""
        update = (change.updated_at, change.status)
        if self.seen == update:
            return
        self.seen = update
        if change.status == self.run.status:
            self.awaiting, self.stale_reads = None, 0
        elif change.state in DESCRIBED_BY_SUMMARY:
            fields: dict[str, Any] = {"state": change.state, "status": change.status}
            if change.started_at is not None:
                fields["started_at"] = change.started_at
            self.run = self.run.model_copy(update=fields)
            self.awaiting, self.stale_reads = None, 0
        else:
            self.must_read, self.awaiting, self.stale_reads = True, change, 0

    def read(self, run: FlowRun, now: float) -> None:
        """Take a read of the run; one that shows less than the listing already did is read again at the
        next poll, until a read agrees with the listing or shows a final state."""
        self.run, self.read_at = run, now
        awaited = self.awaiting
        if awaited is None or run.state.is_final or run.status == awaited.status:
            self.awaiting, self.stale_reads = None, 0
            return
        self.must_read = True
        self.stale_reads += 1
        if self.stale_reads == 1:
            log.info(
                "Run %s is %s in the change feed since %s, but a read of it still says %s; it is read again "
                "at its next poll until the read agrees.",
                run.id,
                awaited.status,
                awaited.updated_at.isoformat(),
                run.status,
            )
