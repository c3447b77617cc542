"""One request scheduler per connection per process, shared by every client on it (sync and async).

It spaces requests at most ``max_requests_per_second`` apart and, after any 429, holds every request on
the connection until the platform's ``Retry-After`` has passed, so a thousand deferred tasks do not
stampede an API that just said "slow down". It also learns the rate the platform accepts
(:class:`AdaptiveRate`), so a connection without the extra settles below an unknown limit instead of
meeting it again every few seconds. Reservations are computed under a lock and the wait happens
outside it, so the same object serves worker threads and the triggerer's event loop.

A reservation only places a request in line. When its turn comes, the request checks again that the
connection is not paused and that the last request went out at least one current interval ago:
requests that lined up before a 429 (or before the rate dropped) keep to the new pace, and requests
woken late together (a busy event loop, a slow thread switch) leave one interval apart instead of in a
burst the platform counts against the limit. A request held back this way waits again, so however late
the turns are served the rate that leaves is never above the rate allowed.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable

DEFAULT_PAUSE_SECONDS = 1.0
"""How long every request waits after a 429 that names no Retry-After."""
MAX_PAUSE_SECONDS = 60.0
"""The longest pause after a 429 unless the caller caps it itself (the clients pass ``retry_max_wait``)."""

DECREASE_FACTOR = 0.5
"""Multiplicative decrease: after a 429 the rate drops to this share of what the platform was accepting."""
PROBE_GROWTH_PER_SECOND = 0.07
"""While the limit is still unknown the rate grows by this share per second (it doubles in ten seconds)
until the next 429, so a first guess that was too low is corrected within seconds, not hours."""
INCREASE_SHARE_PER_SECOND = 0.01
"""Additive increase once the ceiling is known: this share of the ceiling gained per second without a 429,
up to ``TARGET_SHARE`` of it. A halved rate is back at 90% of the ceiling after 40 s, whatever the plan."""
TARGET_SHARE = 0.9
"""The rate creeps back to this share of the ceiling and stays there, a margin below the limit, instead of
climbing into the next 429."""
CEILING_GROWTH_PER_HOUR = 0.05
"""Without a 429 the remembered ceiling itself grows by this share per hour, so a raised limit (a plan
upgrade, another process gone quiet) is found again, slowly enough that one stays rare."""
ACCEPTED_WINDOW_SECONDS = 10.0
"""A 429's rate is measured from the answers other than 429 received over this window. Ten seconds, because
a token bucket also accepts the second's worth it banked: over this window that inflates the measure by a
tenth at most, which ``TARGET_SHARE`` absorbs."""
MEASURE_MIN_SECONDS = 0.25
"""The shortest span a measurement divides by, so a burst in the first instant is not read as a rate."""
MIN_RATE = 0.2
"""Never slower than one request every five seconds, whatever the 429s say."""


class AdaptiveRate:
    """Additive increase, multiplicative decrease of a connection's request rate, driven by 429s.

    Until the first 429 there is no limit. A 429 measures the rate the platform was accepting (its answers
    other than 429 over the last ``ACCEPTED_WINDOW_SECONDS``, never above the rate in force) and drops the
    rate to half of it; the 429s of requests already in flight count as the same event.

    What happens next depends on how much the measure saw. Before a whole window of answers (the start-up
    burst) it is a guess: a bucket's banked tokens accepted in the first instant read as a rate above the
    limit, and 429s answered before the slower accepted answers read as one far below it. So the guess sets
    no ceiling: the rate grows by ``PROBE_GROWTH_PER_SECOND`` until the next 429, which comes within
    seconds whichever way the guess was wrong. A 429 measured over a whole window sets the ceiling, and the
    rate then grows linearly back to 90% of it and stays: a margin below the limit rather than a sawtooth
    through it. Not thread-safe: :class:`RequestScheduler` holds its lock.
    """

    def __init__(self) -> None:
        self.rate: float | None = None
        self.ceiling: float | None = None
        self._changed = 0.0
        self._hold_until = 0.0
        self._accepted: deque[float] = deque()
        self._first_answer: float | None = None
        self.decreases = 0

    def current(self, now: float) -> float | None:
        """The rate allowed now, after the growth since the last change."""
        if self.rate is None:
            return None
        elapsed = now - self._changed
        if elapsed > 0:
            if self.ceiling is None:
                self.rate *= math.exp(PROBE_GROWTH_PER_SECOND * elapsed)
            else:
                self.ceiling *= 1 + CEILING_GROWTH_PER_HOUR * elapsed / 3600
                target = TARGET_SHARE * self.ceiling
                if self.rate < target:
                    self.rate = min(target, self.rate + INCREASE_SHARE_PER_SECOND * self.ceiling * elapsed)
            self._changed = now
        return self.rate

    def accepted(self, now: float) -> None:
        if self._first_answer is None:
            self._first_answer = now
        self._accepted.append(now)
        self._forget(now)

    def limited(self, now: float, hold: float) -> None:
        """A 429: decrease once per congestion event (the pause it asked for, at least one second)."""
        if now < self._hold_until:
            return
        in_force = self.current(now)
        self._forget(now)
        seen = 0.0 if self._first_answer is None else now - self._first_answer
        if self._accepted:
            accepted = len(self._accepted) / min(ACCEPTED_WINDOW_SECONDS, max(MEASURE_MIN_SECONDS, seen))
            measured = accepted if in_force is None else min(accepted, in_force)
        elif in_force is not None:
            measured = in_force
        else:  # nothing measured yet: the pause alone answers this one
            return
        if self.ceiling is not None or seen >= ACCEPTED_WINDOW_SECONDS:
            self.ceiling = max(MIN_RATE, measured)
        self.rate = max(MIN_RATE, DECREASE_FACTOR * measured)
        self._changed = now
        self._hold_until = now + max(1.0, hold)
        self.decreases += 1

    def _forget(self, now: float) -> None:
        while self._accepted and self._accepted[0] < now - ACCEPTED_WINDOW_SECONDS:
            self._accepted.popleft()


class RequestScheduler:
    def __init__(self, max_requests_per_second: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.cap = max_requests_per_second
        self.adaptive = AdaptiveRate()
        self._clock = clock
        self._lock = threading.Lock()
        self._next = 0.0
        self._paused_until = 0.0
        self._last_sent = -math.inf

    @property
    def interval(self) -> float:
        """Seconds between two requests now: the slower of the cap and the learnt rate."""
        with self._lock:
            return self._interval(self._clock())

    def _interval(self, now: float) -> float:
        rates = [rate for rate in (self.cap, self.adaptive.current(now)) if rate]
        return 1.0 / min(rates) if rates else 0.0

    def reserve(self) -> float:
        """Take the next place in line; return how long to wait for it."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self._interval(now)
            return start - now

    def clear_to_send(self) -> float:
        """0 when a request may leave now (it is then counted as sent); else how long to wait and ask again:
        until a pause ends, or until the last request is one interval behind."""
        with self._lock:
            now = self._clock()
            ready = max(self._paused_until, self._last_sent + self._interval(now))
            if now >= ready:
                self._last_sent = now
                return 0.0
            return ready - now

    def answered(self, status: int, retry_after: float | None, cap: float = MAX_PAUSE_SECONDS) -> None:
        """Learn from every answer: a 429 lowers the rate and pauses the connection; others count as accepted."""
        if status == 429:
            self.pause(retry_after, cap)
        else:
            with self._lock:
                self.adaptive.accepted(self._clock())

    def pause(self, seconds: float | None, cap: float = MAX_PAUSE_SECONDS) -> None:
        """The platform answered 429: nothing more goes out on this connection before ``seconds`` pass,
        and never more than ``cap`` from now, whatever the platform asked (an hour, ``inf``)."""
        wanted = DEFAULT_PAUSE_SECONDS if seconds is None else seconds
        pause = max(0.0, min(wanted, cap))
        with self._lock:
            now = self._clock()
            self.adaptive.limited(now, pause)
            self._next = max(self._next, now + pause)
            self._paused_until = max(self._paused_until, now + pause)

    def wait(self) -> None:
        """Block the calling thread until its request may leave."""
        delay = self.reserve()
        while True:
            if delay > 0:
                time.sleep(delay)
            delay = self.clear_to_send()
            if delay <= 0:
                return

    async def await_turn(self) -> None:
        """Wait in the event loop until this request may leave."""
        delay = self.reserve()
        while True:
            if delay > 0:
                await asyncio.sleep(delay)
            delay = self.clear_to_send()
            if delay <= 0:
                return


_schedulers: dict[tuple[str, float | None], RequestScheduler] = {}
_schedulers_lock = threading.Lock()


def scheduler_for(conn_id: str, max_requests_per_second: float | None) -> RequestScheduler:
    """The process-wide scheduler of a connection (a changed limit gets a fresh one)."""
    with _schedulers_lock:
        return _schedulers.setdefault((conn_id, max_requests_per_second), RequestScheduler(max_requests_per_second))
