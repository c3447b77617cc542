"""The example DAGs end to end with `airflow dags test`, as `make demo` runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import API_KEY, Emulator, dags_test


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
