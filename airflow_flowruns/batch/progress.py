"""How far a batch is, said the same way by the worker and by the triggerer: when the wait ends, and the
progress line the task log shows at least once a minute."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

from airflow_flowruns.platforms.base import RunState
from airflow_flowruns.waiting import OnReview

PROGRESS_EVERY_SECONDS = 60.0
"""The longest the task log goes without a progress line while a batch waits."""


class Outcome(StrEnum):
    """Why a wait for a batch ended."""

    SETTLED = "settled"
    """Every document of the shard has a settled run."""
    ROOM = "room"
    """Enough runs settled to start more documents under ``max_in_flight``."""
    TIMEOUT = "timeout"


def settled_count(counts: Counter[str], on_review: OnReview) -> int:
    """Documents whose newest run has its outcome: final, or in review unless the task waits for reviews."""
    final = sum(counts[state.value] for state in RunState if state.is_final)
    return final + (counts[RunState.NEEDS_REVIEW.value] if on_review is not OnReview.WAIT else 0)


def is_live(state: RunState, on_review: OnReview) -> bool:
    """A run still under way: queued or running, or waiting for review while the task waits for reviews."""
    return state in (RunState.QUEUED, RunState.RUNNING) or (
        state is RunState.NEEDS_REVIEW and on_review is OnReview.WAIT
    )


def live_count(counts: Counter[str], on_review: OnReview) -> int:
    """Runs still taking a place under ``max_in_flight``."""
    return sum(n for state, n in counts.items() if is_live(RunState(state), on_review))


def verdict(
    counts: Counter[str], documents: int, pending: int, max_in_flight: int | None, on_review: OnReview
) -> Outcome | None:
    """The outcome the wait has reached, or None to keep waiting.

    ``pending`` documents are not started yet: with ``max_in_flight`` the wait ends for room once the live
    runs are down to half of it (or all pending ones fit), so a resume starts many documents, not one.
    """
    if pending and max_in_flight is not None:
        live = live_count(counts, on_review)
        if live <= max_in_flight // 2 or live + pending <= max_in_flight:
            return Outcome.ROOM
        return None
    if not pending and settled_count(counts, on_review) >= documents:
        return Outcome.SETTLED
    return None


@dataclass
class ProgressLog:
    """Turns successive counts into progress lines with an estimate of the time left."""

    documents: int
    on_review: OnReview
    clock: float = field(default_factory=time.monotonic)
    first_settled: int | None = None

    def line(self, counts: Counter[str], limited_answers: int, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        settled = settled_count(counts, self.on_review)
        if self.first_settled is None:
            self.first_settled = settled
        states = ", ".join(f"{state} {n}" for state, n in sorted(counts.items()) if n)
        return (
            f"{settled} of {self.documents} documents settled ({states or 'no run seen yet'}); "
            f"{live_count(counts, self.on_review)} live; {limited_answers} answers 429; "
            f"{self._estimate(settled, now)}"
        )

    def _estimate(self, settled: int, now: float) -> str:
        done = settled - (self.first_settled or 0)
        elapsed = now - self.clock
        left = self.documents - settled
        if left <= 0:
            return "none left."
        if done <= 0 or elapsed <= 0:
            return "time left not known yet."
        return f"about {left * elapsed / done / 60:.1f} min left."
