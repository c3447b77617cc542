"""The retry rules the distributed e2e checks runs against, on hand-made run histories."""

from __future__ import annotations

from e2e.distributed.checks import Run, retry_violations


def run(run_id: str, phase: str, created: float, ended: float | None) -> Run:
    return Run(run_id, "noxus", phase, created, ended)


def test_one_run_breaks_nothing() -> None:
    assert retry_violations([run("a", "completed", 0, 10)]) == []


def test_a_fresh_run_after_a_failed_or_cancelled_one_is_allowed() -> None:
    runs = [run("a", "failed", 0, 10), run("b", "cancelled", 11, 20), run("c", "completed", 21, 30)]
    assert retry_violations(runs) == []


def test_a_run_started_while_the_first_was_alive() -> None:
    problems = retry_violations([run("a", "failed", 0, 10), run("b", "completed", 5, 30)])
    assert problems == ["b started while a was alive"]


def test_a_run_after_a_succeeded_one_and_two_successes() -> None:
    problems = retry_violations([run("a", "completed", 0, 10), run("b", "completed", 11, 30)])
    assert problems == ["two succeeded runs", "b started after a, which completed"]


def test_a_run_after_one_still_in_review() -> None:
    problems = retry_violations([run("a", "review", 0, None), run("b", "failed", 11, 30)])
    assert problems == ["b started while a was alive", "b started after a, which review"]
