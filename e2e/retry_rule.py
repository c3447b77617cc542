"""The retry rule both end-to-end runs (``make e2e``, ``make e2e-distributed``) check every task instance's
runs against, on the emulator's record of them.

A retry or a cleared task follows the run an earlier try started while that run is alive or succeeded, and
starts a fresh run only when it failed or was cancelled (Airflow 3.3's ``ResumableJobMixin`` convention).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

RESTARTABLE = ("failed", "cancelled")
"""Phases after which a fresh run may follow."""
SUCCEEDED = ("completed", "review")
"""Phases in which a run made its task succeed (a run in review does under ``on_review="succeed"``)."""


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
