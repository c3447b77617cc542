"""The rule ``make e2e`` checks on every task instance's runs: retries re-run failures, never live runs."""

from __future__ import annotations

from typing import Any

import pytest

from e2e.run import retry_problems


def run(run_id: str, phase: str, created: float, finished: float | None) -> dict[str, Any]:
    return {"id": run_id, "status": phase, "created_at": created, "finished_at": finished}


def phase(found: dict[str, Any]) -> str:
    return str(found["status"])


@pytest.mark.parametrize(
    ("runs", "problem"),
    [
        ([run("a", "failed", 0, 5), run("b", "completed", 6, 9)], None),
        ([run("a", "failed", 0, 5), run("b", "failed", 6, 9), run("c", "review", 10, None)], None),
        ([run("a", "running", 0, None), run("b", "completed", 1, 4)], "b started while a was alive"),
        ([run("a", "failed", 0, 5), run("b", "completed", 4, 8)], "b started while a was alive"),
        ([run("a", "completed", 0, 5), run("b", "completed", 6, 9)], "b started after a ended completed"),
        ([run("a", "review", 0, None), run("b", "review", 1, None)], "two succeeded runs"),
    ],
)
def test_retry_problems(runs: list[dict[str, Any]], problem: str | None) -> None:
    found = retry_problems(runs, phase)
    if problem is None:
        assert found == []
    else:
        assert any(problem in text for text in found), found
