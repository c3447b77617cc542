"""The three disruptions of the distributed run, each done once and recorded for the checks.

- A triggerer is killed with SIGKILL while the other is running: its triggers must move to that other,
  already running triggerer (Airflow reassigns them once the dead one's heartbeat is old enough); only
  after they have moved is a replacement started.
- A Celery worker is killed with SIGKILL, with the whole of its process tree, while tasks on it are
  waiting on runs that are still going: their retries land on another worker and must follow those runs.
- Redis is stopped and started again; Celery's queues survive in its append-only file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import psutil

from e2e.distributed.checks import TaskRef
from e2e.distributed.services import Postgres
from e2e.stack import E2EError, Stack

HAND_OFF_TIMEOUT = 180.0
"""How long the triggers of a killed triggerer may take to show up on the other one."""


@dataclass
class TriggererHandOff:
    killed: str
    survivor: str
    at_seconds: float
    held: dict[int, TaskRef]
    """Trigger id to the task it was following, on the killed triggerer at the moment of the kill."""
    moved: set[int] = field(default_factory=set)
    """Triggers seen assigned to the survivor."""
    gone: set[int] = field(default_factory=set)
    """Triggers whose row went before they were seen elsewhere (fired just before the kill)."""
    seconds: float = 0.0
    """From the kill until every held trigger was on the survivor or gone."""


def triggerer_jobs(db: Postgres) -> dict[int, float]:
    """Running triggerer jobs: id to heartbeat age in seconds."""
    rows = db.query(
        "SELECT id, EXTRACT(EPOCH FROM now() - latest_heartbeat) FROM job "
        "WHERE job_type = 'TriggererJob' AND state = 'running'"
    )
    return {int(job_id): float(age) for job_id, age in rows}


def triggers_by_triggerer(db: Postgres) -> dict[int, dict[int, TaskRef]]:
    """Trigger ids per triggerer job, each with the task instance it serves."""
    rows = db.query(
        "SELECT t.triggerer_id, t.id, ti.task_id, ti.map_index FROM trigger t "
        "JOIN task_instance ti ON ti.trigger_id = t.id WHERE t.triggerer_id IS NOT NULL"
    )
    found: dict[int, dict[int, TaskRef]] = {}
    for triggerer_id, trigger_id, task_id, map_index in rows:
        found.setdefault(int(triggerer_id), {})[int(trigger_id)] = (str(task_id), int(map_index))
    return found


def kill_triggerer(
    stack: Stack, db: Postgres, victim: str, survivor: str, jobs: Mapping[str, int], started: float
) -> TriggererHandOff:
    """SIGKILL ``victim``, then wait until everything it held is on ``survivor`` (or gone).

    What it held is read after the kill: its rows stay assigned to its job until Airflow sees the job is
    dead, so the read is exactly what the killed process was running.
    """
    stack.kill(victim)
    held = triggers_by_triggerer(db).get(jobs[victim], {})
    hand_off = TriggererHandOff(victim, survivor, time.monotonic() - started, held)
    killed_at = time.monotonic()
    while True:
        stack.check_alive()
        now = triggers_by_triggerer(db)
        present = {trigger for assigned in now.values() for trigger in assigned}
        hand_off.moved |= set(held) & set(now.get(jobs[survivor], {}))
        remaining = set(held) - hand_off.moved
        hand_off.gone |= {trigger for trigger in remaining if trigger not in present and not _unassigned(db, trigger)}
        if not remaining - hand_off.gone:
            hand_off.seconds = time.monotonic() - killed_at
            return hand_off
        if time.monotonic() - killed_at > HAND_OFF_TIMEOUT:
            raise E2EError(
                f"{len(remaining - hand_off.gone)} triggers of the killed {victim} did not reach {survivor} "
                f"within {HAND_OFF_TIMEOUT:.0f} s"
            )
        time.sleep(0.5)


def _unassigned(db: Postgres, trigger_id: int) -> bool:
    """Whether the trigger row is still there, waiting for a triggerer to take it."""
    return bool(db.query("SELECT 1 FROM trigger WHERE id = %s", trigger_id))


@dataclass
class WorkerKill:
    worker: str
    at_seconds: float
    pids: list[int]
    waiting: dict[TaskRef, int]
    """The tasks that were waiting on a live run in the killed worker, with the try that was lost."""


def waiting_on(
    stack: Stack, db: Postgres, worker: str, task_id: str, live: Callable[[TaskRef], bool]
) -> dict[TaskRef, int]:
    """Tasks ``task_id`` running in ``worker``'s process tree whose run is alive on the platform, with their try."""
    try:
        tree = {p.pid for p in psutil.Process(stack.processes[worker].pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return {}
    rows = db.query(
        "SELECT map_index, try_number, pid FROM task_instance WHERE task_id = %s AND state = 'running'", task_id
    )
    return {
        (task_id, int(index)): int(try_number)
        for index, try_number, pid in rows
        if pid in tree and live((task_id, int(index)))
    }


def kill_worker(stack: Stack, worker: str, waiting: dict[TaskRef, int], started: float) -> WorkerKill:
    pids = stack.kill(worker)
    return WorkerKill(worker, time.monotonic() - started, pids, waiting)
