"""The example DAGs end to end with `airflow dags test`, as `make demo` runs them."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from support.airflow import dags_test, xcom_values
from support.emulator import API_KEY, Emulator


@pytest.mark.integration
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


@pytest.mark.integration
def test_stackai_example_runs_end_to_end_on_the_connection_the_emulator_hands_out(
    airflow_home: Path, emulator: Emulator, pdf: Path
) -> None:
    """The connection as the emulator's discovery call gives it, pasted unchanged: org_id and all."""
    connection = emulator.control.get("/discovery").raise_for_status().json()["platforms"]["stackai"]["connection"]
    state, tasks, xcom = dags_test(
        airflow_home,
        "stackai_contract_review",
        **{connection["env_var"]: connection["json"]},
        AIRFLOW_VAR_FLOWRUNS_DATA_DIR=str(pdf.parent),
    )
    assert (state, tasks) == ("success", {"review": "success", "report": "success"})
    (run,) = emulator.runs()
    result = xcom["review.return_value"]
    assert (result["id"], result["state"], result["flow_id"]) == (run["id"], "succeeded", "flow_contract_review")
    assert run["documents"] == [{"field": "doc-0", "filename": "doc.pdf", "size": pdf.stat().st_size}]
    assert run["inputs"] == {"in-0": "List the renewal and termination clauses of this contract."}
    assert xcom["report.return_value"].startswith(f"StackAI run {run['id']} ended succeeded: Reviewed 1 document(s)")


@pytest.mark.integration
def test_xcoms_read_back_as_pushed_bare_numbers_included(airflow_home: Path) -> None:
    """Airflow's XCom table, as `airflow db migrate` makes it, stores a bare number as a number, not JSON text."""
    with sqlite3.connect(airflow_home / "airflow.db") as migrated:
        (schema,) = migrated.execute("SELECT sql FROM sqlite_master WHERE name = 'xcom'").fetchone()
    pushed = {"count": 3, "share": 0.5, "run": {"id": "r1"}, "url": "http://x", "nothing": None, "done": True}
    db = sqlite3.connect(":memory:")
    db.execute(schema)
    db.executemany(
        "INSERT INTO xcom (dag_run_id, dag_id, run_id, task_id, key, value, timestamp) "
        "VALUES (1, 'd', 'r', 't', ?, ?, 0)",
        [(key, json.dumps(value)) for key, value in pushed.items()],
    )
    assert {type(value) for (value,) in db.execute("SELECT value FROM xcom")} == {int, float, str}
    assert xcom_values(db, "r") == {f"t.{key}": value for key, value in pushed.items()}
    db.close()
