"""One request scheduler per connection per process, shared by every client on it (sync and async).

It spaces requests at most ``max_requests_per_second`` apart and, after any 429, holds every request on
the connection until the platform's ``Retry-After`` has passed, so a thousand deferred tasks do not
stampede an API that just said "slow down". It also learns the rate the platform accepts
(``AdaptiveRate``), so a connection without the extra settles below an unknown limit instead of
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
"""Multiplicative decrease: after a 429 the rate drops to this share of the ceiling it learnt."""
PROBE_GROWTH_PER_SECOND = 0.07
"""While the limit is still unknown the rate grows by this share per second (it doubles in ten seconds)
until the next 429, so a first guess that was too low is corrected within seconds, not hours."""
PROBE_SECONDS = 100.0
"""A guess that grew this long without a 429 (a thousandfold) was no limit at all: the connection has none
again. It also bounds the growth of a guess however long the connection then sits idle (hours, years)."""
RECOVERY_PER_SECOND = 0.07
"""After a 429 the rate grows back by this share per second, compounded (it doubles in ten seconds), up to
``TARGET_SHARE`` of the ceiling: halved, it is back at 90% within nine seconds, so a burst of 429s costs
seconds, not minutes. A ceiling lowered by a run of 429s regrows as fast to where it was (see
``AdaptiveRate``) once a whole window passes without one."""
TARGET_SHARE = 0.9
"""The rate creeps back to this share of the ceiling and stays there, a margin below the limit, instead of
climbing into the next 429."""
CEILING_GROWTH_PER_HOUR = 0.05
"""Without a 429 the remembered ceiling itself grows by this share per hour since the last one, so a raised
limit (a plan upgrade, another process gone quiet) is found again, slowly enough that one stays rare."""
ACCEPTED_WINDOW_SECONDS = 10.0
"""A 429's rate is measured from the answers other than 429 received over this window. Ten seconds, because
a token bucket also accepts the second's worth it banked: over this window that inflates the measure by a
tenth at most, which ``TARGET_SHARE`` absorbs. 429s less than a window apart are one run of them."""
ACCEPTED_HALF_LIFE_SECONDS = 60.0
"""The highest rate accepted over a whole window is remembered with this half-life, and a run of 429s
lowers the ceiling no further than it: a burst of them leaves the rate at half of what the platform was
accepting, where compounding each 429 on the last would starve the connection, while a limit lowered for
good (another process sharing it, a smaller plan) still brings the ceiling down within minutes."""
MEASURE_MIN_SECONDS = 0.25
"""The shortest span a measurement divides by, so a burst in the first instant is not read as a rate."""
MIN_RATE = 0.2
"""Never slower than one request every five seconds, whatever the 429s say."""


def _grown(start: float, limit: float, seconds: float) -> float:
    """``start`` grown by ``RECOVERY_PER_SECOND`` for ``seconds``, never above ``limit``; compared in
    logarithms, so no span of time overflows."""
    if start >= limit:
        return limit
    if seconds <= 0:
        return start
    if RECOVERY_PER_SECOND * seconds >= math.log(limit / start):
        return limit
    return start * math.exp(RECOVERY_PER_SECOND * seconds)


class AdaptiveRate:
    """Multiplicative decrease and recovery of a connection's request rate, driven by 429s.

    Until the first 429 there is no limit. A 429 measures the rate the platform was accepting (its answers
    other than 429 over the last ``ACCEPTED_WINDOW_SECONDS``, never above the rate in force), and the 429s
    of requests already in flight count as the same event.

    Before a whole window of answers (the start-up burst) the measure is a guess: a bucket's banked tokens
    accepted in the first instant read as a rate above the limit, and 429s answered before the slower
    accepted answers read as one far below it. So a guess halves the rate and sets no ceiling: the rate
    grows by ``PROBE_GROWTH_PER_SECOND`` until the next 429, which comes within seconds whichever way the
    guess was wrong. A 429 measured over a whole window sets the ceiling; the rate drops to half of it and
    grows back to 90% of it within seconds and stays: a margin below the limit rather than a sawtooth
    through it.

    A 429 after a whole window without one lowers the ceiling to the rate in force (a limit met), but never
    below the highest rate accepted lately (``ACCEPTED_HALF_LIFE_SECONDS``). The 429s that follow it within
    a window (a burst, a platform refusing every other request) lower it only to that accepted rate, not
    each to half of the last: the ceiling never follows the rate down. Once a whole window passes without a
    429, a ceiling they lowered regrows to where it stood before them (``regain``); a 429 met on the way
    there is a fresh event and makes where it was met the new ``regain``. Growth is computed from the
    values set at the last 429 and the time since, so no idle span overflows it. Not thread-safe:
    ``RequestScheduler`` holds its lock.
    """

    def __init__(self) -> None:
        self.rate: float | None = None
        """The rate set by the last 429; ``current`` adds the growth since."""
        self.ceiling: float | None = None
        """The ceiling set by the last 429; ``ceiling_at`` adds the growth since."""
        self.regain: float | None = None
        """Where the ceiling stood before the 429s that lowered it last, and regrows to once they stop."""
        self._changed = 0.0
        self._hold_until = 0.0
        self._accepted: deque[float] = deque()
        self._first_answer: float | None = None
        self._best = (0.0, 0.0)
        """The highest rate accepted over a whole window, and when."""
        self.decreases = 0

    def current(self, now: float) -> float | None:
        """The rate allowed now, after the growth since the last 429 (None: no limit)."""
        if self.rate is None:
            return None
        since = max(0.0, now - self._changed)
        ceiling = self.ceiling_at(now)
        if ceiling is None:
            return self.rate * math.exp(PROBE_GROWTH_PER_SECOND * since) if since < PROBE_SECONDS else None
        return _grown(self.rate, TARGET_SHARE * ceiling, since)

    def ceiling_at(self, now: float) -> float | None:
        """The ceiling now: regrowing to ``regain`` a whole window after the last 429, slowly beyond it."""
        if self.ceiling is None:
            return None
        since = max(0.0, now - self._changed)
        level = max(self.ceiling, self.regain or 0.0) * (1 + CEILING_GROWTH_PER_HOUR * since / 3600)
        return _grown(self.ceiling, level, since - ACCEPTED_WINDOW_SECONDS)

    def recently_accepted(self, now: float) -> float:
        """The highest rate accepted over a whole window, halved every ``ACCEPTED_HALF_LIFE_SECONDS`` since."""
        best, at = self._best
        return best * math.pow(0.5, (now - at) / ACCEPTED_HALF_LIFE_SECONDS)

    def accepted(self, now: float) -> None:
        if self._first_answer is None:
            self._first_answer = now
        self._accepted.append(now)
        self._forget(now)
        if now - self._first_answer >= ACCEPTED_WINDOW_SECONDS:
            self._remember(len(self._accepted) / ACCEPTED_WINDOW_SECONDS, now)

    def _remember(self, accepted: float, now: float) -> None:
        """Keep ``accepted`` (a rate measured over a whole window) if it beats what is remembered."""
        if accepted >= self.recently_accepted(now):
            self._best = (accepted, now)

    def limited(self, now: float, hold: float) -> None:
        """A 429: decrease once per congestion event (the pause it asked for, at least one second)."""
        if now < self._hold_until:
            return
        in_force = self.current(now)
        measured = self._measured(now, in_force)
        if measured is None:  # nothing measured yet: the pause alone answers this one
            return
        seen = 0.0 if self._first_answer is None else now - self._first_answer
        if self.ceiling is None and seen < ACCEPTED_WINDOW_SECONDS:  # a guess: no ceiling yet
            self.rate = max(MIN_RATE, DECREASE_FACTOR * measured)
        else:
            self.ceiling = self._lowered_ceiling(now, in_force, measured)
            lowered = DECREASE_FACTOR * self.ceiling
            self.rate = max(MIN_RATE, lowered if in_force is None else min(in_force, lowered))
        self._changed = now
        self._hold_until = now + max(1.0, hold)
        self.decreases += 1

    def _measured(self, now: float, in_force: float | None) -> float | None:
        """The rate the platform was accepting: over the window (less at first), never above the rate in force."""
        self._forget(now)
        if not self._accepted:
            return in_force
        seen = 0.0 if self._first_answer is None else now - self._first_answer
        accepted = len(self._accepted) / min(ACCEPTED_WINDOW_SECONDS, max(MEASURE_MIN_SECONDS, seen))
        return accepted if in_force is None else min(accepted, in_force)

    def _lowered_ceiling(self, now: float, in_force: float | None, measured: float) -> float:
        """The ceiling after a 429 (see the class): never below what was accepted lately."""
        ceiling, recent = self.ceiling_at(now), self.recently_accepted(now)
        if ceiling is None or in_force is None:  # the first measured over a whole window
            self._remember(measured, now)
            self.regain = max(MIN_RATE, measured)
            return self.regain
        if now - self._changed >= ACCEPTED_WINDOW_SECONDS:  # a fresh event: the limit was met
            self.regain = max(MIN_RATE, min(ceiling, max(recent, in_force)))
            return self.regain
        return max(MIN_RATE, min(ceiling, recent))  # one more of a run

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
        self.limited_answers = 0
        """429s answered on the connection in this process, for progress reports."""

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
            self.limited_answers += 1
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
