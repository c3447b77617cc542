"""The retry rule `make e2e` and `make e2e-distributed` check every task instance's runs against, on hand-made
run histories and on the emulator's own record of runs: a fresh run only after a failed, rejected or cancelled
one, never two alive, never two succeeded."""

from __future__ import annotations

import pytest

from airflow_flowruns.platforms.extend.emulator import EXTEND_INVOICE_WORKFLOW
from e2e.retry_rule import Run, retry_problems, run_of
from support.emulator import Emulator


def run(run_id: str, phase: str, created: float, ended: float | None) -> Run:
    return Run(run_id, "tableflow", phase, created, ended)


@pytest.mark.parametrize(
    "runs",
    [
        [run("a", "completed", 0, 10)],
        [run("a", "review", 0, None)],
        [run("a", "failed", 0, 10), run("b", "cancelled", 11, 20), run("c", "completed", 21, 30)],
        [run("a", "failed", 0, 5), run("b", "failed", 6, 9), run("c", "review", 10, None)],
        [run("c", "running", 21, None), run("a", "failed", 0, 10), run("b", "cancelled", 11, 20)],
    ],
    ids=["one run", "one run in review", "after failed and cancelled", "review last", "listed out of order"],
)
def test_fresh_runs_after_failed_or_cancelled_ones_break_nothing(runs: list[Run]) -> None:
    assert retry_problems(runs) == []


@pytest.mark.parametrize(
    ("runs", "problems"),
    [
        (
            [run("a", "failed", 0, 10), run("b", "completed", 5, 30)],
            ["b started while a was alive"],
        ),
        (
            [run("a", "running", 0, None), run("b", "failed", 1, 4)],
            ["b started while a was alive", "b started after a, which was running, not failed or cancelled"],
        ),
        (
            [run("a", "completed", 0, 10), run("b", "completed", 11, 30)],
            ["two succeeded runs: ['a', 'b']", "b started after a, which was completed, not failed or cancelled"],
        ),
        (
            [run("a", "review", 0, None), run("b", "review", 1, None)],
            [
                "two succeeded runs: ['a', 'b']",
                "b started while a was alive",
                "b started after a, which was review, not failed or cancelled",
            ],
        ),
    ],
    ids=["started before the failure", "after a live run", "after a succeeded run", "two in review"],
)
def test_a_second_run_beside_a_live_or_succeeded_one_is_named(runs: list[Run], problems: list[str]) -> None:
    assert retry_problems(runs) == problems


def start_extend_run(emulator: Emulator) -> str:
    """A run that stays processing until a test ends it."""
    emulator.scenario(EXTEND_INVOICE_WORKFLOW, "extend", processing_seconds=3600)
    started = emulator.control.post(f"/extend/flows/{EXTEND_INVOICE_WORKFLOW}/manual-runs", json={"count": 1})
    (run_id,) = started.raise_for_status().json()["ids"]
    return str(run_id)


@pytest.mark.parametrize("ending", ["CANCELLED", "REJECTED", "FAILED"])
def test_the_emulators_record_ends_a_run_however_it_ended(ending: str, emulator: Emulator) -> None:
    """A run cancelled or rejected on Extend has ended: the run started after it breaks no rule."""
    first = start_extend_run(emulator)
    emulator.set_status(first, ending)
    start_extend_run(emulator)
    runs = [run_of(summary) for summary in emulator.runs()]
    assert runs[0].phase == ("failed" if ending == "FAILED" else "cancelled") and runs[0].ended is not None
    assert retry_problems(runs) == []


def test_the_emulators_record_names_a_run_started_beside_a_live_one(emulator: Emulator) -> None:
    first = start_extend_run(emulator)
    second = start_extend_run(emulator)
    emulator.set_status(first, "CANCELLED")
    assert retry_problems(map(run_of, emulator.runs())) == [f"{second} started while {first} was alive"]
