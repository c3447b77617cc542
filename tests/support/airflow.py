"""``airflow dags test`` against the emulator: an Airflow home, its environment, and what a DAG run left behind."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).parent / "airflow")


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        **extra,
    }


def dags_test(
    home: Path, dag_id: str, logical_date: str | None = None, **env: str
) -> tuple[str, dict[str, str], dict[str, Any]]:
    command = dags_test_command(dag_id, logical_date)
    done = subprocess.run(command, env=airflow_env(home, **env), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return last_dag_run(home, dag_id)


def dags_test_command(dag_id: str, logical_date: str | None = None) -> list[str]:
    return [AIRFLOW, "dags", "test", dag_id, *([logical_date] if logical_date else [])]


def last_dag_run(home: Path, dag_id: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The state, task states (by task id) and XComs (by ``task.key``) of the DAG's latest run."""
    with sqlite3.connect(home / "airflow.db") as db:
        run_id, state = db.execute(
            "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
        ).fetchone()
        tasks = dict(db.execute("SELECT task_id, state FROM task_instance WHERE run_id = ?", (run_id,)).fetchall())
        xcom = xcom_values(db, run_id)
    return state, tasks, xcom


def xcom_values(db: sqlite3.Connection, run_id: str) -> dict[str, Any]:
    """A DAG run's XComs by ``task.key``, decoded."""
    return {
        f"{task}.{key}": xcom_value(value)
        for task, key, value in db.execute("SELECT task_id, key, value FROM xcom WHERE run_id = ?", (run_id,))
    }


def xcom_value(stored: object) -> Any:
    """An XCom value as SQLite hands it back. Airflow declares the column JSON, which gives it SQLite's numeric
    affinity: a bare number comes back as a number, every other value as its JSON text."""
    return json.loads(stored) if isinstance(stored, str) else stored
