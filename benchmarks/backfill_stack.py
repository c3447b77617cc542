"""The Airflow of the backfill benchmark, and what it measures of it: CPU and memory of its processes.

Airflow runs as ``make e2e`` runs it (``e2e/stack.py``): API server, scheduler with the LocalExecutor, DAG
processor and triggerer, each its own process in a session of its own, on SQLite in a temporary
``AIRFLOW_HOME``. The benchmark reads the DAG run's state from that database directly (read-only), so its
watching costs Airflow nothing.

CPU is counted over every process in those sessions, task processes included (``ProcessMeter``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import Emulator
from e2e.stack import AirflowApi, Stack, read_only, wait_for

ROOT = Path(__file__).resolve().parent.parent
PARALLELISM = 8
"""LocalExecutor slots, as ``make e2e`` runs: on two cores more only queue on the CPU."""
DAG_FILE = """# The Airflow DAGs of the backfill benchmark (safe-mode discovery looks for both words).
from benchmarks.backfill_dags import build_dags

globals().update(build_dags({settings!r}))
"""


@dataclass
class Seen:
    """One process at its latest sample: its CPU seconds (its own and its reaped children's), its parent."""

    cpu: float
    ppid: int


@dataclass
class ProcessMeter:
    """CPU seconds (user + system) of every process of the stack, and peak RSS of the triggerer and of task
    processes, from samples of every process in the stack's sessions.

    A process's CPU is its own plus that of the children it reaped (``children_user``, ``children_system``),
    so a task process that lived between two samples is counted in its supervisor once reaped. The total at
    a sample is the sum over the processes alive then, plus the last sample of those that ended while their
    parent was none of ours (reaped by someone else, so counted nowhere else).
    """

    stack: Stack
    alive: dict[tuple[int, float], Seen] = field(default_factory=dict)
    ended_elsewhere: float = 0.0
    latest: float = 0.0
    """The total at the latest sample."""
    peak_rss: dict[str, int] = field(default_factory=lambda: {"worker": 0, "triggerer": 0})

    def sample(self) -> None:
        sessions = {proc.pid: name for name, proc in self.stack.processes.items()}
        alive: dict[tuple[int, float], Seen] = {}
        triggerer_rss = 0
        for proc in self.stack.in_our_sessions():
            try:
                with proc.oneshot():
                    times, rss, ppid = proc.cpu_times(), proc.memory_info().rss, proc.ppid()
                    key = (proc.pid, proc.create_time())
                    session = sessions.get(os.getsid(proc.pid), "")
            except (ProcessLookupError, psutil.Error):
                continue  # it ended between the listing and the reading: its parent reaps it
            alive[key] = Seen(times.user + times.system + times.children_user + times.children_system, ppid)
            if session.startswith("triggerer"):
                triggerer_rss += rss
            elif session == "scheduler" and ppid not in sessions:
                self.peak_rss["worker"] = max(self.peak_rss["worker"], rss)  # below the executor's workers
        known = {pid for pid, _ in self.alive}
        self.ended_elsewhere += sum(s.cpu for k, s in self.alive.items() if k not in alive and s.ppid not in known)
        self.alive = alive
        self.peak_rss["triggerer"] = max(self.peak_rss["triggerer"], triggerer_rss)
        self.latest = sum(s.cpu for s in alive.values()) + self.ended_elsewhere

    def total(self) -> float:
        """CPU seconds of the stack's processes at the latest sample."""
        return self.latest

    def reset_peaks(self) -> None:
        self.peak_rss = dict.fromkeys(self.peak_rss, 0)


class BackfillAirflow:
    """One Airflow for every configuration of a benchmark run: its DAGs, connections and processes."""

    def __init__(self, root: Path, emulator: Emulator, settings: dict[str, Any], limit: float | None) -> None:
        self.stack = Stack(root, parallelism=PARALLELISM)
        self.api = AirflowApi(self.stack.api_url)
        self.meter = ProcessMeter(self.stack)
        capacity = str(max(1000, settings["max_documents"]) + 10)
        self.stack.env.update(
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            AIRFLOW__CORE__MAX_MAP_LENGTH=str(max(1024, settings["max_documents"])),
            AIRFLOW__TRIGGERER__CAPACITY=capacity,
            AIRFLOW__TRIGGERER__MAX_TRIGGER_TO_SELECT_PER_LOOP=capacity,
        )
        extra: dict[str, Any] = {} if limit is None else {"max_requests_per_second": limit}
        for platform in settings["platforms"]:
            variable = f"AIRFLOW_CONN_{platform['conn_id'].upper()}"
            emulator.connect(platform["conn_id"], platform["name"], **extra)
            self.stack.env[variable] = os.environ.pop(variable)
        (self.stack.dags / "backfill.py").write_text(DAG_FILE.format(settings=settings))
        self.dag_ids = [f"backfill_{m}_{p['name']}" for m in settings["modes"] for p in settings["platforms"]]

    @property
    def db(self) -> Path:
        return self.stack.home / "airflow.db"

    def start(self) -> None:
        self.stack.start_airflow(migrate_timeout=600)

        def healthy() -> bool | None:
            self.stack.check_alive()
            return self.api.healthy()

        wait_for("the API server", healthy, timeout=300)
        self.api.login()

        def parsed() -> bool | None:
            self.stack.check_alive()
            with read_only(self.db) as db:
                found = {row[0] for row in db.execute("SELECT dag_id FROM serialized_dag")}
            return True if found >= set(self.dag_ids) else None

        wait_for("the DAG processor to parse the backfill DAGs", parsed, timeout=300, interval=2)

    def stop(self) -> None:
        self.stack.stop()

    def trigger(self, dag_id: str, run_id: str, folder: Path) -> None:
        body = {"dag_run_id": run_id, "logical_date": None, "conf": {"folder": f"{folder}/"}}
        self.api.call("POST", f"/dags/{dag_id}/dagRuns", json_body=body)

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """State, start and end (unix seconds, None until set) of one DAG run."""
        with read_only(self.db) as db:
            row = db.execute(
                "SELECT state, start_date, end_date FROM dag_run WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)
            ).fetchone()
        state, start, end = row if row else (None, None, None)
        return {"state": state, "start": _unix(start), "end": _unix(end)}

    def task_instances(self, dag_id: str, run_id: str) -> list[tuple[str, int, str, int]]:
        """Task id, map index, state and try number of every task instance of one DAG run."""
        with read_only(self.db) as db:
            rows = db.execute(
                "SELECT task_id, map_index, state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ?",
                (dag_id, run_id),
            ).fetchall()
        return [(str(task), int(index), str(state), int(tries)) for task, index, state, tries in rows]

    def return_value(self, dag_id: str, run_id: str, task_id: str) -> Any:
        with read_only(self.db) as db:
            row = db.execute(
                "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? AND key = 'return_value'",
                (dag_id, run_id, task_id),
            ).fetchone()
        return json.loads(row[0]) if row else None


def _unix(value: str | None) -> float | None:
    """A timestamp as SQLite keeps Airflow's (UTC, ISO format, with or without its offset) in unix seconds."""
    if value is None:
        return None
    stamp = datetime.fromisoformat(value)
    return stamp.timestamp() if stamp.tzinfo else stamp.replace(tzinfo=UTC).timestamp()
