"""One request scheduler per connection per process, shared by every client on it (sync and async).

It spaces requests at most ``max_requests_per_second`` apart and, after any 429, holds every request on
the connection until the platform's ``Retry-After`` has passed, so a thousand deferred tasks do not
stampede an API that just said "slow down". Reservations are computed under a lock and the wait happens
outside it, so the same object serves worker threads and the triggerer's event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time

DEFAULT_PAUSE_SECONDS = 1.0
"""How long every request waits after a 429 that names no Retry-After."""


class RequestScheduler:
    def __init__(self, max_requests_per_second: float | None) -> None:
        self.interval = 1.0 / max_requests_per_second if max_requests_per_second else 0.0
        self._lock = threading.Lock()
        self._next = 0.0

    def reserve(self) -> float:
        """Take the next free slot; return how long to wait for it."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
            return start - now

    def pause(self, seconds: float | None) -> None:
        """The platform answered 429: nothing more goes out on this connection before ``seconds`` pass."""
        with self._lock:
            self._next = max(self._next, time.monotonic() + (seconds if seconds is not None else DEFAULT_PAUSE_SECONDS))

    def wait(self) -> None:
        delay = self.reserve()
        if delay > 0:
            time.sleep(delay)

    async def await_turn(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)


_schedulers: dict[tuple[str, float | None], RequestScheduler] = {}
_schedulers_lock = threading.Lock()


def scheduler_for(conn_id: str, max_requests_per_second: float | None) -> RequestScheduler:
    """The process-wide scheduler of a connection (a changed limit gets a fresh one)."""
    with _schedulers_lock:
        return _schedulers.setdefault((conn_id, max_requests_per_second), RequestScheduler(max_requests_per_second))
