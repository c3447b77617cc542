"""The example DAGs end to end with `airflow dags test`, as `make demo` runs them."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import API_KEY, Emulator

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW = str(Path(sys.executable).parent / "airflow")


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("airflow-home")
    subprocess.run([AIRFLOW, "db", "migrate"], env=airflow_env(home), check=True, capture_output=True)
    return home


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        **extra,
    }


def dags_test(home: Path, dag_id: str, **env: str) -> tuple[str, dict[str, str], dict[str, object]]:
    done = subprocess.run(
        [AIRFLOW, "dags", "test", dag_id], env=airflow_env(home, **env), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with sqlite3.connect(home / "airflow.db") as db:
        run_id, state = db.execute(
            "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
        ).fetchone()
        tasks = dict(db.execute("SELECT task_id, state FROM task_instance WHERE run_id = ?", (run_id,)).fetchall())
        xcom = {
            f"{task}.{key}": json.loads(value)
            for task, key, value in db.execute("SELECT task_id, key, value FROM xcom WHERE run_id = ?", (run_id,))
        }
    return state, tasks, xcom


@pytest.mark.slow
def test_tableflow_example_runs_end_to_end(airflow_home: Path, emulator: Emulator, pdfs: dict[str, Path]) -> None:
    data = pdfs["po"].parent
    (data / "inv.pdf").write_bytes(pdfs["inv"].read_bytes())
    conn = json.dumps({"conn_type": "tableflow", "password": API_KEY, "host": emulator.url})
    state, tasks, xcom = dags_test(
        airflow_home,
        "tableflow_invoice_reconciliation",
        AIRFLOW_CONN_TABLEFLOW_DEFAULT=conn,
        AIRFLOW_VAR_FLOWRUNS_DATA_DIR=str(data),
    )
    assert state == "success"
    assert tasks == {
        "reconcile": "success",
        "route": "success",
        "post_to_erp": "success",
        "send_to_review_queue": "skipped",
    }
    (run,) = emulator.runs()
    result = xcom["reconcile.return_value"]
    assert result["id"] == run["id"] == xcom["reconcile.flow_run_id"]
    assert (result["state"], result["platform"], result["flow_id"]) == ("succeeded", "tableflow", "dk4g1tUg1uHLs8YU")
    assert xcom["reconcile.flow_run_url"] == result["url"]
    assert len(run["files"]) == 4 and run["name"] == "PO-123 Reconciliation"
    assert API_KEY not in json.dumps(xcom)
