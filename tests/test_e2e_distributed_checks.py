"""The checks of `make e2e-distributed` on crafted records: each decision that fails the run (a retry-rule
breach, a task state or XCom that differs from its last run, a stray, running or cancelled run, a disruption
that never happened, no 429, untraced traffic, the key found or a scan of the wrong place) names a problem,
and records without any pass. No services: the inputs are what the run would read from the emulator,
PostgreSQL and its scans."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from airflow_flowruns.platforms.start import keyed_name
from e2e.distributed import report
from e2e.distributed.chaos import TriggererHandOff, WorkerKill
from e2e.distributed.checks import TaskRef
from e2e.harness import Outcome
from e2e.secret_scan import Findings
from e2e.stack import Stack

DAG, RUN = "flowruns_distributed", "distributed"
KEY = "sk-e2e-0123456789abcdef"
DEFERRED, WAITING = ("deferred", 0), ("waiting", 0)
"""A TableFlow task (runs matched by the task key in their metadata) and a Noxus one (by the key in the file's
name)."""
RAW = {
    "tableflow": {"running": "processing", "completed": "completed", "failed": "failed", "cancelled": "cancelled"},
    "noxus": {"running": "running", "completed": "completed", "failed": "failed", "cancelled": "stopped"},
}


def run(platform: str, ref: TaskRef | None, run_id: str, phases: list[tuple[str, float]]) -> dict[str, Any]:
    """A run as the emulator lists it (summary) and times it (timeline): ``phases`` in order, with their times."""
    history = [[RAW[platform][name], at] for name, at in phases]
    summary: dict[str, Any] = {"id": run_id, "platform": platform, "status": history[-1][0], "created_at": phases[0][1]}
    if platform == "tableflow":
        summary["metadata"] = {"airflow_task_key": report.task_key(DAG, RUN, *ref) if ref else "elsewhere"}
    else:
        key = report.task_key(DAG, RUN, *ref) if ref else "af-elsewhere"
        summary["uploads"] = [{"filename": keyed_name(key, f"doc-{ref[1] if ref else 0:04d}.pdf")}]
    return {"summary": summary, "timeline": {"id": run_id, "created": phases[0][1], "history": history}}


def checked(
    runs: list[dict[str, Any]], states: dict[TaskRef, str], followed: dict[TaskRef, str] | None = None
) -> Outcome:
    out = Outcome()
    tasks = report.Tasks(states, dict.fromkeys(states, 1), followed or {})
    by_key = {report.task_key(DAG, RUN, *ref): ref for ref in (DEFERRED, WAITING)}
    report.check(out, [r["summary"] for r in runs], [r["timeline"] for r in runs], tasks, by_key)
    return out


CLEAN = [
    run("tableflow", DEFERRED, "tf-1", [("running", 0), ("failed", 10)]),
    run("tableflow", DEFERRED, "tf-2", [("running", 11), ("completed", 20)]),
    run("noxus", WAITING, "nx-1", [("running", 0), ("failed", 5)]),
]


def test_a_fresh_run_after_a_failed_one_and_task_states_of_last_runs_pass() -> None:
    out = checked(CLEAN, {DEFERRED: "success", WAITING: "failed"}, {DEFERRED: "tf-2", WAITING: "nx-1"})
    assert out.problems == []
    assert "runs per task instance: one 1, none 0, several 1 (1 extra runs" in "\n".join(out.figures)
    assert "retry-rule violations (two alive at once, two succeeded, a run after a live one): 0" in out.figures[5]


@pytest.mark.parametrize(
    ("runs", "states", "followed", "problem"),
    [
        (
            [
                run("noxus", WAITING, "nx-1", [("running", 0), ("failed", 9)]),
                *CLEAN[:2],
                run("noxus", WAITING, "nx-2", [("running", 5), ("completed", 20)]),
            ],
            {DEFERRED: "success", WAITING: "success"},
            {},
            "retry rules broken: [\"('waiting', 0) on noxus: nx-2 started while nx-1 was alive\"]",
        ),
        (
            [*CLEAN[:2], run("tableflow", DEFERRED, "tf-3", [("running", 21), ("completed", 30)]), CLEAN[2]],
            {DEFERRED: "success", WAITING: "failed"},
            {},
            "retry rules broken: [\"('deferred', 0) on tableflow: two succeeded runs: ['tf-2', 'tf-3']\", "
            "\"('deferred', 0) on tableflow: tf-3 started after tf-2, which was completed, not failed or cancelled\"]",
        ),
        (
            CLEAN,
            {DEFERRED: "failed", WAITING: "failed"},
            {},
            "task states that differ from their last run's: "
            "[\"('deferred', 0): task failed, last run tf-2 completed\"]",
        ),
        (
            CLEAN,
            {DEFERRED: "success", WAITING: "failed"},
            {DEFERRED: "tf-1"},
            "tasks that follow another run: [\"('deferred', 0) follows tf-1, not its last run tf-2\"]",
        ),
        (
            [*CLEAN, run("noxus", None, "nx-stray", [("running", 3), ("completed", 8)])],
            {DEFERRED: "success", WAITING: "failed"},
            {},
            "runs that no task instance started: ['nx-stray']",
        ),
        (
            [*CLEAN[:2], run("noxus", WAITING, "nx-1", [("running", 0)])],
            {DEFERRED: "success", WAITING: "failed"},
            {},
            "runs left running: ['nx-1']",
        ),
        (
            [*CLEAN[:2], run("noxus", WAITING, "nx-1", [("running", 0), ("cancelled", 4)])],
            {DEFERRED: "success", WAITING: "failed"},
            {},
            "runs cancelled that no one asked to cancel: [\"('waiting', 0) nx-1\"]",
        ),
        (
            CLEAN[:2],
            {DEFERRED: "success", WAITING: "failed"},
            {},
            "task instances that started no run: 1",
        ),
        (
            CLEAN,
            {DEFERRED: "success", WAITING: "up_for_retry"},
            {},
            "tasks not in a final state: success 1, up_for_retry 1",
        ),
    ],
    ids=[
        "noxus retry beside a live run",
        "a run after a succeeded one",
        "task state not its last run's",
        "xcom names an earlier run",
        "a run no task started",
        "a run left running",
        "a run cancelled unasked",
        "a task without a run",
        "a task not finished",
    ],
)
def test_each_broken_rule_fails_the_run_and_is_named(
    runs: list[dict[str, Any]], states: dict[TaskRef, str], followed: dict[TaskRef, str], problem: str
) -> None:
    problems = checked(runs, states, followed).problems
    assert any(found.startswith(problem) for found in problems), problems


def tasks(states: dict[TaskRef, str], tries: dict[TaskRef, int]) -> report.Tasks:
    return report.Tasks(states, tries, {})


def test_the_three_disruptions_pass_when_each_happened_and_its_tasks_went_on() -> None:
    out = Outcome()
    hand_off = TriggererHandOff("triggerer-1", "triggerer-2", 90, {7: DEFERRED}, moved={7}, seconds=42)
    kill = WorkerKill("worker-1", 120, [11, 12], {WAITING: 1})
    report.disruptions(out, hand_off, kill, 150, tasks({DEFERRED: "success", WAITING: "failed"}, {WAITING: 2}))
    assert out.problems == []
    assert out.figures[0].startswith("triggerer-1 killed (SIGKILL) at 90 s holding 1 triggers: 1 moved")


def test_a_disruption_that_never_happened_fails_the_run() -> None:
    out = Outcome()
    report.disruptions(out, None, None, None, tasks({}, {}))
    assert out.problems == [
        "no triggerer was killed: the two triggerers never both held triggers",
        "no Celery worker was killed: none had two tasks waiting on live runs at once",
        "Redis was never restarted",
    ]


def test_a_killed_triggerers_unfinished_task_and_a_killed_workers_task_without_a_later_try_fail_the_run() -> None:
    out = Outcome()
    hand_off = TriggererHandOff("triggerer-1", "triggerer-2", 90, {7: DEFERRED}, moved={7}, seconds=42)
    kill = WorkerKill("worker-1", 120, [11], {WAITING: 2})
    report.disruptions(out, hand_off, kill, 150, tasks({DEFERRED: "deferred", WAITING: "failed"}, {WAITING: 2}))
    assert out.problems == [
        "tasks whose triggers the killed triggerer held did not finish",
        "tasks of the killed worker that never ran a later try: [('waiting', 0)]",
    ]


LIMITS = argparse.Namespace(worker_concurrency=8, client_rate=5.0, rate_limit=6.0)


def test_the_shared_limit_is_shown_per_process_and_passes_with_429s_and_traced_traffic() -> None:
    out = Outcome()
    notes = [(1001, 200, 0.1), (1001, 429, 0.2), (2002, 200, 0.3), (3003, 200, 1.5)]
    stats = {"requests": 4, "rate_limited": 1, "faults": {"drop": 2}}
    report.traffic(out, notes, {1001: "triggerer-2", 2002: "worker-1"}, stats, LIMITS)
    assert out.problems == []
    assert out.figures[0].endswith("270 req/s together; peak sent 3 req/s")
    assert out.figures[2] == (
        "requests by process (task slots counted with their worker): triggerer-2 2 requests (50%), 1 got 429; "
        "unattributed 1 requests (25%), 0 got 429; worker-1 1 requests (25%), 0 got 429"
    )


def test_no_429_or_mostly_untraced_traffic_fails_the_run() -> None:
    out = Outcome()
    notes = [(1001, 200, 0.1), (2002, 200, 0.2), (3003, 200, 0.3)]
    report.traffic(out, notes, {1001: "worker-1"}, {"requests": 3, "rate_limited": 0, "faults": {}}, LIMITS)
    assert out.problems == [
        "the emulator's rate limit never answered 429: it was not below the demand",
        "only 1 of 3 requests were traced to a process",
    ]


def scanned(
    tmp_path: Path, home_text: str, *, triggers: str = '{"poll_interval": 5}', redis: str = "celery"
) -> Outcome:
    """The scans over a home, process output, dump, server log and Redis folder holding crafted text."""
    stack = Stack(tmp_path / "run", parallelism=1)
    (stack.home / "logs").mkdir()
    (stack.home / "logs" / "task.log").write_text(home_text)
    (stack.procs / "worker-1.log").write_text("worker started")
    dump, server_log, redis_dir = tmp_path / "airflow.sql", tmp_path / "server.log", tmp_path / "redis"
    dump.write_text("INSERT INTO xcom VALUES ('run-1');")
    server_log.write_text("LOG: checkpoint complete")
    redis_dir.mkdir()
    (redis_dir / "appendonly.aof").write_text("*3 $3 SET")
    trigger_findings, redis_findings = Findings(KEY, ("poll_interval",)), Findings(KEY, ("celery",))
    trigger_findings.text("postgres:trigger.kwargs (decrypted)", triggers, "trigger kwargs")
    redis_findings.text("redis:unacked", redis, "redis values")
    out = Outcome()
    runs = [{"id": "run-1"}, {"id": "run-2"}]
    report.Scans(KEY, stack, dump, server_log, redis_dir).run(
        out, runs, [{"path": "/v1/runs"}], trigger_findings, redis_findings
    )
    return out


def test_scans_that_read_every_place_and_find_no_key_pass(tmp_path: Path) -> None:
    out = scanned(tmp_path, "followed run-1 to its end")
    assert out.problems == []
    assert "  run ids the scan of Airflow's home and logs saw: 1 of 2" in out.figures


@pytest.mark.parametrize(
    ("home_text", "triggers", "redis", "problem"),
    [
        (f"Authorization: Bearer {KEY} for run-1", '{"poll_interval": 5}', "celery", "the API key was found 1 times"),
        ("run-1", f'{{"poll_interval": 5, "api_key": "{KEY}"}}', "celery", "the API key was found 1 times"),
        ("run-1", '{"poll_interval": 5}', f"celery {KEY}", "the API key was found 1 times"),
        ("nothing of the run", '{"poll_interval": 5}', "celery", "the scan of Airflow's home and logs saw none"),
        ("run-1", "gAAAAAB-still-encrypted", "celery", "no trigger kwargs were read in clear"),
        ("run-1", '{"poll_interval": 5}', "", "no Celery message was read from Redis"),
    ],
    ids=[
        "key in a log",
        "key in trigger kwargs",
        "key in redis",
        "home without the runs",
        "kwargs unread",
        "no celery",
    ],
)
def test_a_key_found_or_a_place_not_read_fails_the_run(
    tmp_path: Path, home_text: str, triggers: str, redis: str, problem: str
) -> None:
    problems = scanned(tmp_path, home_text, triggers=triggers, redis=redis).problems
    assert [found for found in problems if found.startswith(problem)], problems
