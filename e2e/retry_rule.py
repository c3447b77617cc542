"""The retry rule both end-to-end runs (``make e2e``, ``make e2e-distributed``) check every task instance's
runs against, on the emulator's record of them, and how a run's phase and end are read from that record.

A retry or a cleared task follows the run an earlier try started while that run is alive or succeeded, and
starts a fresh run only when it failed, was rejected or was cancelled (Airflow 3.3's ``ResumableJobMixin``
convention).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_flowruns.platforms import emulator_parts

CANCELLED_STATUSES = frozenset({"CANCELLED", "REJECTED", "stopped", "cancelled"})
"""Raw statuses of a run stopped or rejected rather than scripted to an outcome: the phase ``cancelled``."""
ENDED = ("completed", "failed", "cancelled")
"""Phases a run never leaves."""
RESTARTABLE = ("failed", "cancelled")
"""Phases after which a fresh run may follow."""
SUCCEEDED = ("completed", "review")
"""Phases in which a run made its task succeed (a run in review does under ``on_review="succeed"``)."""
EXPECTED_TASK_STATE = {"completed": "success", "review": "success", "failed": "failed", "cancelled": "failed"}
"""The task state each way a run settles leads to, under ``on_review="succeed"``."""


@dataclass
class Run:
    """One run as the emulator recorded it, its phase normalized (queued, running, review, completed, failed or
    cancelled)."""

    id: str
    platform: str
    phase: str
    created: float
    ended: float | None
    """When it first reached a final status (completed, failed or cancelled); None while it is alive."""


@functools.cache
def phases_of() -> dict[str, dict[str, str]]:
    """Raw status to emulator phase per platform: the emulator, not the provider, says how a run ended."""
    return {m.PLATFORM: {raw: phase for phase, raw in m.STATUSES.items()} for m in emulator_parts()}


def phase_of(platform: str, status: str) -> str:
    """The phase of one of ``platform``'s raw statuses (the raw status itself where the emulator has no phase)."""
    return "cancelled" if status in CANCELLED_STATUSES else phases_of()[platform].get(status, status)


def run_of(summary: Mapping[str, Any], history: Iterable[Sequence[Any]] | None = None) -> Run:
    """A run from the emulator's summary of it (``/_emulator/runs``): its phase now, and when it ended, the first
    time its status history (``[raw status, unix time]`` pairs, oldest first; the summary's own by default)
    reached a phase it never leaves, whichever status got it there."""
    platform = summary["platform"]
    steps = summary["history"] if history is None else history
    ended = next((at for status, at in steps if phase_of(platform, status) in ENDED), None)
    return Run(summary["id"], platform, phase_of(platform, summary["status"]), summary["created_at"], ended)


def retry_problems(runs: Iterable[Run]) -> list[str]:
    """What breaks the retry rule among one task instance's runs: never two alive at once, never two succeeded,
    and every run after the first started once the run before it had ended failed or cancelled."""
    ordered = sorted(runs, key=lambda run: run.created)
    problems = []
    succeeded = [run.id for run in ordered if run.phase in SUCCEEDED]
    if len(succeeded) > 1:
        problems.append(f"two succeeded runs: {succeeded}")
    for before, after in itertools.pairwise(ordered):
        if before.ended is None or before.ended > after.created:
            problems.append(f"{after.id} started while {before.id} was alive")
        if before.phase not in RESTARTABLE:
            problems.append(f"{after.id} started after {before.id}, which was {before.phase}, not failed or cancelled")
    return problems
