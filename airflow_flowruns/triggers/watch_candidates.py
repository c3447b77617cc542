"""The runs one poll of the asset watcher announces: the oldest few of those the listing shows, each once; and
what one poll found (``Poll``).

A poll announces at most ``max_events_per_poll`` runs, oldest first, and the rest at later polls. Only
those few are kept while the listing is read, so what a poll holds in memory is bounded by that number,
not by how long the listing is (a platform whose listing never ends stops at the walk's bounds, and by
then has offered tens of thousands of runs).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from airflow_flowruns.platforms.base import FlowRun
from airflow_flowruns.triggers.watch_position import Position


class OldestRuns:
    """The ``limit`` oldest runs offered (by the time each entered its state, then by key), each key once:
    a run listed on two pages of one poll is announced once."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._order: list[tuple[datetime, str]] = []
        self._runs: dict[str, FlowRun] = {}
        self.more = False
        """Whether a run was left out for want of room: the poll did not announce everything it found."""

    def offer(self, at: datetime, key: str, run: FlowRun) -> None:
        """Keep ``run`` (``key``, in its state since ``at``) if it is among the ``limit`` oldest so far."""
        if key in self._runs:
            return
        entry = (at, key)
        if len(self._order) >= self._limit:
            self.more = True
            if entry >= self._order[-1]:
                return
            _, dropped = self._order.pop()
            del self._runs[dropped]
        bisect.insort(self._order, entry)
        self._runs[key] = run

    def __iter__(self) -> Iterator[tuple[datetime, str, FlowRun]]:
        """The runs kept, oldest first."""
        return ((at, key, self._runs[key]) for at, key in self._order)


@dataclass(frozen=True)
class Poll:
    """What one poll found."""

    announced: list[tuple[dict[str, Any], Position]]
    """The new announcements, oldest first, each with the position that covers it and every earlier one."""
    cut_short: str | None
    """Why the poll read only part of the listing (its walk stopped at its bounds), or None."""
    more: bool
    """It found more new runs than it could announce (``max_events_per_poll``)."""

    @property
    def saw_everything(self) -> bool:
        """It read the whole listing and announced all it found: the position may move to the poll's start."""
        return self.cut_short is None and not self.more
