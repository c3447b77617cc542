"""`make demo`: the bundled emulator, a throwaway Airflow home, and the example DAG end to end.

Prints the DAG run's state, each task's state and the XCom of the flow-run task, and exits non-zero
unless the DAG run succeeded.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DAG_ID = "tableflow_invoice_reconciliation"
API_KEY = "emulator-key"  # the emulator's default key


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="flowruns-demo-") as tmp:
        home, data = Path(tmp, "airflow"), Path(tmp, "data")
        data.mkdir()
        for name in ("po.pdf", "inv.pdf", "a.pdf", "b.pdf"):
            (data / name).write_bytes(b"%PDF-1.4\n% demo document " + name.encode() + b"\n%%EOF\n")
        emulator = subprocess.Popen(
            [str(BIN / "flowruns-emulator"), "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert emulator.stdout is not None
            url = emulator.stdout.readline().strip().rsplit(" ", 1)[-1]
            print(f"emulator: {url}")
            env = {
                **os.environ,
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW_VAR_FLOWRUNS_DATA_DIR": str(data),
                "AIRFLOW_CONN_TABLEFLOW_DEFAULT": json.dumps(
                    {"conn_type": "tableflow", "password": API_KEY, "host": url}
                ),
            }
            airflow = str(BIN / "airflow")
            subprocess.run([airflow, "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
            test = subprocess.run([airflow, "dags", "test", DAG_ID], env=env, capture_output=True, text=True)
            if test.returncode != 0:
                print(test.stdout[-4000:], test.stderr[-4000:], sep="\n")
        finally:
            emulator.terminate()
            emulator.wait(timeout=10)
        return report(home / "airflow.db")


def report(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT run_id, state FROM dag_run WHERE dag_id = ?", (DAG_ID,)).fetchone()
        if row is None:
            print("the DAG did not run")
            return 1
        run_id, state = row
        print(f"\nDAG run {run_id}: {state}")
        for task_id, task_state in conn.execute(
            "SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ? ORDER BY start_date",
            (DAG_ID, run_id),
        ):
            print(f"  {task_id:<22} {task_state}")
        print("\nXCom of task 'reconcile':")
        for key, value in conn.execute(
            "SELECT key, value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = 'reconcile' ORDER BY key",
            (DAG_ID, run_id),
        ):
            print(f"  {key}: {json.dumps(json.loads(value), indent=2).replace(chr(10), chr(10) + '  ')}")
    return 0 if state == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
