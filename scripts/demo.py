"""`make demo`: the bundled emulator, a throwaway Airflow home, and two example DAGs end to end.

1. ``tableflow_invoice_reconciliation``: one run, its states and XCom.
2. ``invoices_to_database``: five invoices extracted by Extend runs, their outputs landed, the extracted
   fields loaded into a SQLite table, which is printed.

Exits non-zero unless both DAG runs succeeded and the table holds one row per invoice.
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
API_KEY = "emulator-key"  # the emulator's default key
DAGS = {"tableflow_invoice_reconciliation": "reconcile", "invoices_to_database": None}
"""The example DAGs the demo runs, each with the task whose XCom it prints."""
INVOICES = ("acme-0042.pdf", "globex-7781.pdf", "initech-0193.pdf", "umbrella-5520.pdf", "stark-3107.pdf")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="flowruns-demo-") as tmp:
        home, data, invoices = Path(tmp, "airflow"), Path(tmp, "data"), Path(tmp, "invoices")
        for folder, names in ((data, ("po.pdf", "inv.pdf", "a.pdf", "b.pdf")), (invoices, INVOICES)):
            folder.mkdir()
            for name in names:
                (folder / name).write_bytes(b"%PDF-1.4\n% demo document " + name.encode() + b"\n%%EOF\n")
        database = Path(tmp, "invoices.db")
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
                "AIRFLOW_VAR_FLOWRUNS_INVOICES_DIR": str(invoices),
                "AIRFLOW_VAR_FLOWRUNS_OUTPUTS_DIR": str(Path(tmp, "outputs")),
                "AIRFLOW_CONN_TABLEFLOW_DEFAULT": json.dumps(
                    {"conn_type": "tableflow", "password": API_KEY, "host": url}
                ),
                "AIRFLOW_CONN_EXTEND_DEFAULT": json.dumps({"conn_type": "extend", "password": API_KEY, "host": url}),
                "AIRFLOW_CONN_INVOICES_DB": json.dumps({"conn_type": "sqlite", "host": str(database)}),
            }
            airflow = str(BIN / "airflow")
            subprocess.run([airflow, "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
            outputs = {}
            for dag_id in DAGS:
                test = subprocess.run([airflow, "dags", "test", dag_id], env=env, capture_output=True, text=True)
                outputs[dag_id] = (test.returncode, test.stdout + test.stderr)
        finally:
            emulator.terminate()
            emulator.wait(timeout=10)
        ok = True
        for dag_id, xcom_task in DAGS.items():
            succeeded = report(home / "airflow.db", dag_id, xcom_task)
            returncode, output = outputs[dag_id]
            if not succeeded or returncode != 0:
                # `airflow dags test` can exit 0 for a failed DAG run: its log says why a task failed.
                print(f"\nairflow dags test {dag_id} exited {returncode}; the end of its output:\n{output[-6000:]}")
            ok = ok and succeeded and returncode == 0
        return 0 if print_table(database) == len(INVOICES) and ok else 1


def report(db: Path, dag_id: str, xcom_task: str | None = None) -> bool:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT run_id, state FROM dag_run WHERE dag_id = ?", (dag_id,)).fetchone()
        if row is None:
            print(f"\n{dag_id}: the DAG did not run")
            return False
        run_id, state = row
        print(f"\n{dag_id} run {run_id}: {state}")
        for task_id, map_index, task_state in conn.execute(
            "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ? "
            "ORDER BY start_date, map_index",
            (dag_id, run_id),
        ):
            label = task_id if map_index < 0 else f"{task_id}[{map_index}]"
            print(f"  {label:<24} {task_state}")
        if xcom_task:
            print(f"\nXCom of task {xcom_task!r}:")
            for key, value in conn.execute(
                "SELECT key, value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? ORDER BY key",
                (dag_id, run_id, xcom_task),
            ):
                print(f"  {key}: {json.dumps(json.loads(value), indent=2).replace(chr(10), chr(10) + '  ')}")
    return bool(state == "success")


def print_table(database: Path) -> int:
    """Print the invoices table the DAG loaded; the number of rows."""
    if not database.exists():
        print("\nno invoices table: the load did not run")
        return 0
    with sqlite3.connect(database) as conn:
        rows = conn.execute(
            "SELECT vendor, invoice_number, total, currency, lowest_confidence, run_id FROM invoices ORDER BY vendor"
        ).fetchall()
    print(f"\nTable invoices ({len(rows)} rows):")
    print(f"  {'vendor':<20} {'invoice':<10} {'total':>10} {'cur':<4} {'conf':>5}  run")
    for vendor, number, total, currency, confidence, run_id in rows:
        print(f"  {vendor:<20} {number:<10} {total:>10.2f} {currency:<4} {confidence:>5.2f}  {run_id}")
    return len(rows)


if __name__ == "__main__":
    sys.exit(main())
