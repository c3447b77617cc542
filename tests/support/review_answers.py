"""A person answering Required Actions while ``airflow dags test`` runs a DAG in the background.

The DAG file under test loads ``support/dags_test_hitl.py`` so the run reads and answers Required Actions as a
deployment does; the answer is written into the task's ``hitl_detail`` row of the Airflow home's SQLite
database, as Airflow's REST API does.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from support.airflow import dags_test_command, last_dag_run

REVIEWER = {"id": "rita", "name": "Rita Reviewer"}
JSON_COLUMNS = ("options", "params", "chosen_options", "params_input", "responded_by")


@dataclass
class DagsTest:
    """``airflow dags test`` of one DAG, running in the background; its output goes to ``log``."""

    home: Path
    dag_id: str
    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, home: Path, dag_id: str, env: dict[str, str], logical_date: str | None = None) -> DagsTest:
        log = home / f"{dag_id}.log"
        command = dags_test_command(dag_id, logical_date)
        with log.open("wb") as out:
            process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        return cls(home, dag_id, process, log)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def required_action(self, timeout: float = 60) -> dict[str, Any]:
        """The task's Required Action, once the task has raised it."""
        deadline = time.monotonic() + timeout
        while (item := required_action(self.home, self.dag_id)) is None:
            assert self.process.poll() is None, "the DAG run ended without a Required Action:\n" + self.output()[-4000:]
            assert time.monotonic() < deadline, "no Required Action in time:\n" + self.output()[-4000:]
            time.sleep(0.2)
        return item

    def accept_each(self, timeout: float) -> int:
        """Accept every Required Action the run opens, with its parameters as shown, until ``airflow dags test``
        ends; how many there were (none when no run stopped for review)."""
        deadline, answered = time.monotonic() + timeout, 0
        while self.process.poll() is None:
            assert time.monotonic() < deadline, "airflow dags test did not end in time:\n" + self.output()[-4000:]
            for item in required_actions(self.home, self.dag_id, unanswered=True):
                answer(self.home, item, "Accept the extraction", shown(item))
                answered += 1
            time.sleep(0.2)
        return answered

    def finish(self, timeout: float = 120) -> tuple[str, dict[str, str], dict[str, Any]]:
        """The DAG run's state, task states and XComs, once ``airflow dags test`` ended; a second try of the task
        fails the test at once (every case here ends in the first)."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            assert self.tries() <= 1, "the task was retried:\n" + self.output()[-4000:]
            assert time.monotonic() < deadline, "airflow dags test did not end in time:\n" + self.output()[-4000:]
            time.sleep(0.5)
        return last_dag_run(self.home, self.dag_id)

    def stop(self) -> None:
        """Kill ``airflow dags test`` if it still runs."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def tries(self) -> int:
        """The task's tries so far; 0 before its task instance exists."""
        with closing(sqlite3.connect(self.home / "airflow.db", timeout=30)) as db:
            found = db.execute("SELECT try_number FROM task_instance WHERE dag_id = ?", (self.dag_id,)).fetchone()
        return int(found[0]) if found else 0


StartDagsTest = Callable[..., DagsTest]


def required_actions(home: Path, dag_id: str, *, unanswered: bool = False) -> list[dict[str, Any]]:
    """The Required Actions (``hitl_detail`` rows) of the DAG's tasks, their JSON columns decoded; only those
    without an answer when ``unanswered``."""
    query = "SELECT h.* FROM hitl_detail h JOIN task_instance t ON t.id = h.ti_id WHERE t.dag_id = ?"
    with closing(sqlite3.connect(home / "airflow.db", timeout=30)) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(query + (" AND h.responded_at IS NULL" if unanswered else ""), (dag_id,)).fetchall()
    return [decoded(dict(row)) for row in rows]


def decoded(item: dict[str, Any]) -> dict[str, Any]:
    return {**item, **{name: json.loads(item[name]) if item[name] else None for name in JSON_COLUMNS}}


def required_action(home: Path, dag_id: str) -> dict[str, Any] | None:
    """The Required Action of the DAG's task, None before there is one."""
    return next(iter(required_actions(home, dag_id)), None)


def answer(home: Path, item: dict[str, Any], option: str, params_input: dict[str, Any]) -> None:
    """Record a person's answer as Airflow's REST API does (``PATCH .../hitlDetails``): the option chosen, the
    parameters as submitted, who and when; refused, like the API's 409, when the item has an answer already."""
    responded_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    with closing(sqlite3.connect(home / "airflow.db", timeout=30)) as db, db:
        changed = db.execute(
            "UPDATE hitl_detail SET chosen_options = ?, params_input = ?, responded_by = ?, responded_at = ? "
            "WHERE ti_id = ? AND responded_at IS NULL",
            (json.dumps([option]), json.dumps(params_input), json.dumps(REVIEWER), responded_at, item["ti_id"]),
        ).rowcount
    assert changed == 1, "the Required Action had an answer already"


def shown(item: dict[str, Any]) -> dict[str, Any]:
    """The Required Action's parameters as its form shows them: the extracted values, and an empty note."""
    return {name: param["value"] for name, param in item["params"].items()}
