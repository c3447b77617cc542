"""Where an asset watcher is: what it has announced, as a small JSON value kept in the asset's state store."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

log = logging.getLogger(__name__)

_VERSION = 1
CLOCK_SKEW = timedelta(minutes=1)
"""How far a platform's clock may run ahead of the watcher's. A run stamped later than that (a clock set
wrong, a stamp in year 9999) is still announced, once, but the watermark never moves past the watcher's
own clock plus this much, so one such run cannot make the watcher skip every run after it. Kept well below
the watcher's ``LATE_SECONDS``: after such a run a poll still looks minutes behind the clock for runs a
listing shows late."""


@dataclass(frozen=True)
class Position:
    """A watermark and the runs announced just around it.

    Every run that entered a watched state before ``since`` is announced, except runs a listing shows
    late: a poll therefore also looks ``late`` seconds behind the watermark, and ``seen`` remembers the
    runs announced in that span (by ``dedup_key``, with the time each entered its state) so they are not
    announced twice by one watcher. Nothing that happened before ``start`` is ever announced.

    ``since`` never passes the watcher's clock plus ``CLOCK_SKEW``: a run stamped beyond that stays in
    ``seen`` until the clock has passed its stamp, so it is announced once however long it is listed.
    """

    start: datetime
    since: datetime
    seen: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def starting(cls, start: datetime) -> Position:
        return cls(start, start)

    def floor(self, late: float) -> datetime:
        """The earliest change a poll looks for."""
        return max(self.start, self.since - timedelta(seconds=late))

    def announced(self, key: str) -> bool:
        return key in self.seen

    def after(self, key: str, at: datetime, late: float, now: datetime) -> Position:
        """The position once the run ``key``, which entered its state at ``at``, is announced too, when the
        watcher's clock says ``now``."""
        since = min(max(self.since, at), now + CLOCK_SKEW)
        return self._moved(since, {**self.seen, key: at.timestamp()}, late)

    def noted(self, key: str, at: datetime) -> Position:
        """The position once the run ``key`` is announced by a poll that read only part of the listing: the
        watermark stays, since runs on the pages it did not read may be older than ``key``'s."""
        return Position(self.start, self.since, {**self.seen, key: at.timestamp()})

    def settled(self, polled_at: datetime, late: float) -> Position:
        """The position after a poll that started at ``polled_at`` found nothing more to announce."""
        return self._moved(max(self.since, polled_at), self.seen, late)

    def clamped(self, now: datetime) -> Position:
        """This position with its watermark no later than ``now`` plus ``CLOCK_SKEW``: a position saved
        by a version that let one run stamped in the future carry it there would announce nothing again."""
        ceiling = now + CLOCK_SKEW
        if self.since <= ceiling:
            return self
        log.warning(
            "The watcher's stored position %s is later than this clock allows (%s); it is moved back to %s.",
            self.since.isoformat(),
            now.isoformat(),
            ceiling.isoformat(),
        )
        return Position(self.start, ceiling, self.seen)

    def _moved(self, since: datetime, seen: Mapping[str, float], late: float) -> Position:
        oldest = max(self.start, since - timedelta(seconds=late)).timestamp()
        return Position(self.start, since, {key: at for key, at in seen.items() if at >= oldest})

    def to_json(self) -> dict[str, Any]:
        return {
            "v": _VERSION,
            "start": self.start.isoformat(),
            "since": self.since.isoformat(),
            "seen": dict(self.seen),
        }

    @classmethod
    def from_json(cls, value: Any) -> Position:
        if not isinstance(value, Mapping) or value.get("v") != _VERSION:
            raise ValueError(f"not a watcher position: {str(value)[:200]}")
        seen = value.get("seen") or {}
        if not isinstance(seen, Mapping):
            raise ValueError("a watcher position's seen is not a mapping")
        return cls(
            _utc(datetime.fromisoformat(value["start"])),
            _utc(datetime.fromisoformat(value["since"])),
            {str(key): float(at) for key, at in seen.items()},
        )


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class PositionStore:
    """The position under one key in the state store of every asset the watcher feeds.

    The triggerer hands a watcher one accessor per watched asset (``AssetStateStoreAccessors``); a trigger
    shared by several assets keeps its position in each, and reads back the earliest, so an asset added
    later to a running watcher never makes it skip what another asset has not been told.
    """

    def __init__(self, accessors: Any, key: str) -> None:
        self._accessors = [
            *getattr(accessors, "_by_name", {}).values(),
            *getattr(accessors, "_by_uri", {}).values(),
        ] or [accessors]
        self.key = key

    async def load(self) -> Position | None:
        found = []
        for accessor in self._accessors:
            value = await accessor.aget(self.key)
            if value is None:
                continue
            try:
                found.append(Position.from_json(value))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("Ignoring the stored watcher position %s: %s", self.key, exc)
        return min(found, key=lambda position: position.since) if found else None

    async def save(self, position: Position) -> None:
        value = position.to_json()
        for accessor in self._accessors:
            await accessor.aset(self.key, value)
