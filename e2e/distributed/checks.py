"""The checks on runs and task instances after a distributed run: states, the retry rules, orphans.

Runs are matched to task instances by the task key in their metadata (TableFlow, Extend) or, where a
platform keeps no metadata (Noxus), by the uploaded document's file name, which is unique per document.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_flowruns.platforms.start import TASK_KEY_FIELD, key_in_name
from e2e.harness import Outcome, counts
from e2e.retry_rule import ENDED, EXPECTED_TASK_STATE, Run, phase_of, retry_problems, run_of

TaskRef = tuple[str, int]
"""(task id, map index)"""


@dataclass
class RunsOf:
    """The runs of every task instance, oldest first, and the runs no task instance started."""

    by_task: dict[TaskRef, list[Run]] = field(default_factory=dict)
    strays: list[Run] = field(default_factory=list)


def match(
    summaries: list[dict[str, Any]],
    timelines: list[dict[str, Any]],
    by_key: Mapping[str, TaskRef],
) -> RunsOf:
    created = {t["id"]: t for t in timelines}
    found = RunsOf(by_task={ref: [] for ref in by_key.values()})
    for summary in summaries:
        run = run_of(summary, created[summary["id"]]["history"])
        ref = ref_of(summary, by_key)
        (found.strays if ref is None else found.by_task[ref]).append(run)
    for runs in found.by_task.values():
        runs.sort(key=lambda run: run.created)
    return found


def ref_of(summary: Mapping[str, Any], by_key: Mapping[str, TaskRef]) -> TaskRef | None:
    """The task instance that started a run, by the task key it carries: in its metadata, or (Noxus, which keeps
    no metadata) in its uploaded file's name."""
    names = [str(upload.get("filename")) for upload in summary.get("uploads") or []]
    keys = [(summary.get("metadata") or {}).get(TASK_KEY_FIELD), *map(key_in_name, names)]
    return next((by_key[key] for key in keys if key is not None and key in by_key), None)


def phase(summary: Mapping[str, Any]) -> str:
    """A run's normalized phase as the emulator scripted it (cancelled for the raw statuses of a stopped run)."""
    return phase_of(summary["platform"], summary["status"])


def check_runs(
    out: Outcome,
    runs: RunsOf,
    tasks: Mapping[TaskRef, str],
    tries: Mapping[TaskRef, int],
    followed: Mapping[TaskRef, str],
) -> None:
    """Task states against their last runs, the retry rules, runs left running; figures and problems."""
    all_runs = [run for found in runs.by_task.values() for run in found] + runs.strays
    mismatches, wrong_run, broken = [], [], []
    broken_on: Counter[str] = Counter()
    for ref, found in sorted(runs.by_task.items()):
        last = found[-1] if found else None
        if last and EXPECTED_TASK_STATE.get(last.phase) != tasks.get(ref):
            mismatches.append(f"{ref}: task {tasks.get(ref)}, last run {last.id} {last.phase}")
        if last and followed.get(ref, last.id) != last.id:
            wrong_run.append(f"{ref} follows {followed[ref]}, not its last run {last.id}")
        problems = retry_problems(found)
        broken += [f"{ref} on {found[0].platform}: {problem}" for problem in problems]
        broken_on.update({found[0].platform: 1} if problems else {})
    with_runs = sum(1 for found in runs.by_task.values() if found)
    several = [found for found in runs.by_task.values() if len(found) > 1]
    left_running = [run.id for run in all_runs if run.phase not in (*ENDED, "review")]
    extra = sum(len(found) - 1 for found in several)
    out.figure(f"final task states: {counts(Counter(tasks.values()))}")
    out.figure(f"runs created on the emulator: {len(all_runs)} ({counts(Counter(run.phase for run in all_runs))})")
    out.figure(
        f"runs per task instance: one {with_runs - len(several)}, none {len(runs.by_task) - with_runs}, "
        f"several {len(several)} ({extra} extra runs, each after a failed or cancelled one unless listed below); "
        f"runs no task instance started: {len(runs.strays)}"
    )
    out.figure(f"task state matches its last run's (on_review=succeed): {with_runs - len(mismatches)} of {with_runs}")
    out.figure(
        f"retry-rule violations (two alive at once, two succeeded, a run after a live one): {len(broken)}, "
        f"in task instances on {counts(broken_on)}"
    )
    out.figure(f"tasks whose XCom names another run than their last: {len(wrong_run)}")
    out.figure(f"runs left running that no task follows: {len(left_running)}")
    out.figure(f"task instances that ran more than one try: {sum(1 for t in tries.values() if t > 1)}")
    out.require(len(tasks) == len(runs.by_task), f"{len(runs.by_task) - len(tasks)} task instances missing")
    out.require(with_runs == len(runs.by_task), f"task instances that started no run: {len(runs.by_task) - with_runs}")
    out.require(not runs.strays, f"runs that no task instance started: {[r.id for r in runs.strays][:10]}")
    out.require(not mismatches, f"task states that differ from their last run's: {mismatches[:10]}")
    out.require(not broken, f"retry rules broken: {broken[:10]}")
    out.require(not wrong_run, f"tasks that follow another run: {wrong_run[:10]}")
    out.require(not left_running, f"runs left running: {left_running[:10]}")
    cancelled = [
        f"{ref} {run.id}" for ref, found in sorted(runs.by_task.items()) for run in found if run.phase == "cancelled"
    ]
    out.figure(f"runs cancelled though no one acted on a task (no user action, no timeout): {len(cancelled)}")
    out.require(not cancelled, f"runs cancelled that no one asked to cancel: {cancelled[:10]}")
    out.require(
        set(tasks.values()) <= {"success", "failed"}, f"tasks not in a final state: {counts(Counter(tasks.values()))}"
    )
