"""The figures and checks of the distributed run, from what it collected once the DAG run ended."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from airflow_flowruns.operators.flow_run import task_key as operator_task_key
from e2e.distributed.chaos import TriggererHandOff, WorkerKill
from e2e.distributed.checks import TaskRef, check_runs, match
from e2e.distributed.services import Postgres
from e2e.distributed.traffic import UNATTRIBUTED, peak_rate, shares
from e2e.harness import Outcome, counts
from e2e.secret_scan import Findings, scan_json, scan_tree
from e2e.stack import Stack

FINAL_TASK_STATES = ("success", "failed")


def task_key(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    ti = SimpleNamespace(dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=map_index)
    return operator_task_key({"ti": ti})  # type: ignore[typeddict-item]


@dataclass
class Tasks:
    states: dict[TaskRef, str]
    tries: dict[TaskRef, int]
    followed: dict[TaskRef, str]
    """The run id each task instance last pushed to XCom."""


def read_tasks(db: Postgres, dag_id: str, run_id: str) -> Tasks:
    rows = db.query(
        "SELECT task_id, map_index, state, try_number FROM task_instance "
        "WHERE dag_id = %s AND run_id = %s AND map_index >= 0",
        dag_id,
        run_id,
    )
    xcom = db.query(
        "SELECT task_id, map_index, value FROM xcom WHERE dag_id = %s AND run_id = %s AND key = 'flow_run_id'",
        dag_id,
        run_id,
    )
    return Tasks(
        states={(task, index): str(state) for task, index, state, _ in rows},
        tries={(task, index): int(try_number) for task, index, _, try_number in rows},
        followed={(task, index): _json(value) for task, index, value in xcom},
    )


def _json(value: Any) -> str:
    """psycopg2 decodes the JSON column already; a text column would still hold JSON."""
    if isinstance(value, bytes | memoryview):
        value = json.loads(bytes(value))
    return str(value)


def check(
    out: Outcome,
    summaries: list[dict[str, Any]],
    timelines: list[dict[str, Any]],
    tasks: Tasks,
    by_key: Mapping[str, TaskRef],
) -> None:
    runs = match(summaries, timelines, by_key)
    per_task = counts({task_id: sum(1 for ref in runs.by_task if ref[0] == task_id) for task_id, _ in runs.by_task})
    platforms = counts({s["platform"]: sum(1 for r in summaries if r["platform"] == s["platform"]) for s in summaries})
    out.figure(
        f"task instances: {len(tasks.states)} of {len(runs.by_task)} ({per_task}); runs by platform: {platforms}"
    )
    check_runs(out, runs, tasks.states, tasks.tries, tasks.followed)


def disruptions(
    out: Outcome,
    hand_off: TriggererHandOff | None,
    kill: WorkerKill | None,
    redis_restart_at: float | None,
    tasks: Tasks,
) -> None:
    if hand_off is None:
        out.require(False, "no triggerer was killed: the two triggerers never both held triggers")
    else:
        finished = sum(1 for ref in hand_off.held.values() if tasks.states.get(ref) in FINAL_TASK_STATES)
        out.figure(
            f"{hand_off.killed} killed (SIGKILL) at {hand_off.at_seconds:.0f} s holding {len(hand_off.held)} triggers: "
            f"{len(hand_off.moved)} moved to the running {hand_off.survivor} within {hand_off.seconds:.0f} s, "
            f"{len(hand_off.gone)} had fired before; {finished} of their tasks finished; the replacement "
            "started only afterwards"
        )
        out.require(bool(hand_off.held), "the killed triggerer held no triggers")
        out.require(finished == len(hand_off.held), "tasks whose triggers the killed triggerer held did not finish")
    if kill is None:
        out.require(False, "no Celery worker was killed: none had two tasks waiting on live runs at once")
    else:
        retried = {ref: tasks.tries.get(ref, 0) for ref in kill.waiting}
        stuck = sorted(ref for ref, lost in kill.waiting.items() if retried[ref] <= lost)
        ended = counts(Counter(str(tasks.states.get(ref)) for ref in kill.waiting))
        out.figure(
            f"{kill.worker} killed (SIGKILL, {len(kill.pids)} processes) at {kill.at_seconds:.0f} s with "
            f"{len(kill.waiting)} tasks waiting on live runs; each ran a later try: "
            f"{len(kill.waiting) - len(stuck)} of {len(kill.waiting)}; ended {ended}"
        )
        out.require(not stuck, f"tasks of the killed worker that never ran a later try: {stuck}")
    if redis_restart_at is None:
        out.require(False, "Redis was never restarted")
    else:
        out.figure(f"Redis restarted (SIGTERM, append-only file kept) at {redis_restart_at:.0f} s")


def traffic(
    out: Outcome,
    notes: list[tuple[int, int, float]],
    owner: Mapping[int, str],
    stats: Mapping[str, Any],
    args: argparse.Namespace,
) -> None:
    """429s under a per-key limit below what every process may ask for, and each process's share."""
    processes = 2 + 2 * args.worker_concurrency
    asked = processes * 3 * args.client_rate
    out.figure(
        f"rate limit: {args.rate_limit:g} req/s per key on the emulator; each of up to {processes} processes "
        f"(2 triggerers, {2 * args.worker_concurrency} task slots) may send {args.client_rate:g} req/s per "
        f"connection on 3 connections, {asked:g} req/s together; peak sent {peak_rate(notes)} req/s"
    )
    faults = stats["faults"]
    out.figure(
        f"emulator: {stats['requests']:,} API requests, {stats['rate_limited']:,} answered 429 by the rate limit, "
        f"{sum(faults.values())} other faults injected ({counts(faults)})"
    )
    found = shares(notes, owner)
    total = sum(share.requests for share in found.values()) or 1
    lines = [
        f"{name} {share.requests:,} requests ({share.requests / total:.0%}), {share.limited} got 429"
        for name, share in sorted(found.items())
    ]
    out.figure("requests by process (task slots counted with their worker): " + "; ".join(lines))
    out.require(stats["rate_limited"] > 0, "the emulator's rate limit never answered 429: it was not below the demand")
    attributed = total - found.get(UNATTRIBUTED, SimpleNamespace(requests=0)).requests
    out.require(attributed > total / 2, f"only {attributed} of {total} requests were traced to a process")


class Scans:
    """The API key, looked for everywhere the deployment keeps anything."""

    def __init__(self, secret: str, stack: Stack, dump: Path, postgres_log: Path, redis_dir: Path) -> None:
        self.secret, self.stack, self.dump, self.postgres_log, self.redis_dir = (
            secret,
            stack,
            dump,
            postgres_log,
            redis_dir,
        )

    def run(
        self,
        out: Outcome,
        runs: list[dict[str, Any]],
        requests: list[dict[str, Any]],
        triggers: Findings,
        redis: Findings,
    ) -> None:
        # Which runs a dump must hold is not knowable from here (a try killed before its XCom was kept, then
        # re-run, leaves its run only in the task log), so the control is that the place holds some of them.
        run_ids = tuple(run["id"] for run in runs)
        needs_runs = ("full pg_dump and PostgreSQL's log", "Airflow's home and logs")
        places = {
            "Airflow's home and logs": lambda f: scan_tree(f, self.stack.home),
            "process output": lambda f: scan_tree(f, self.stack.procs),
            "full pg_dump and PostgreSQL's log": lambda f: [
                f.text(str(self.dump), self.dump.read_bytes(), "files"),
                f.text(str(self.postgres_log), self.postgres_log.read_bytes(), "files"),
            ],
            "Redis's append-only files": lambda f: scan_tree(f, self.redis_dir),
            "emulator request log": lambda f: scan_json(f, "emulator requests", requests, "emulator requests"),
        }
        hits = 0
        for place, scan in places.items():
            findings = Findings(self.secret, controls=run_ids if place in needs_runs else ())
            scan(findings)
            out.figure(f"secret scan of {place}: {findings.summary()}")
            hits += len(findings.hits)
            if place in needs_runs:
                seen = sum(1 for run_id in run_ids if findings.control_hits[run_id] > 0)
                out.figure(f"  run ids the scan of {place} saw: {seen:,} of {len(run_ids):,}")
                out.require(seen > 0, f"the scan of {place} saw none of the {len(run_ids)} run ids: wrong places read")
        out.figure(f"secret scan of the Redis keyspace during the run: {redis.summary()}")
        out.figure(f"secret scan of the trigger table while tasks were deferred: {triggers.summary()}")
        hits += len(redis.hits) + len(triggers.hits)
        out.require(hits == 0, f"the API key was found {hits} times (see above)")
        out.require(triggers.control_hits["poll_interval"] > 0, "no trigger kwargs were read in clear")
        out.require(redis.control_hits["celery"] > 0, "no Celery message was read from Redis")
