"""Extract an invoice with an Extend workflow: upload the file, start one run, wait in the triggerer.

Files are read from the folder in the Airflow Variable ``flowruns_data_dir`` (default ``/data``).
Connection: ``AIRFLOW_CONN_EXTEND_DEFAULT='{"conn_type": "extend", "password": "<api key>"}'``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import dag, task

from airflow_flowruns.operators.flow_run import FlowRunOperator


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["flowruns", "extend", "example"])
def extend_invoice_extraction() -> None:
    extract = FlowRunOperator(
        task_id="extract",
        flowruns_conn_id="extend_default",
        flow_id="workflow_invoice",
        files={"file": "{{ var.value.get('flowruns_data_dir', '/data') }}/doc.pdf"},
        metadata={"source": "airflow", "dag_run": "{{ run_id }}"},
        deferrable=True,
        poll_interval=1,
        timeout=600,
    )

    @task
    def report(run: dict[str, Any]) -> str:
        return f"Extend run {run['id']} ended {run['state']}: {run['url']}"

    # Airflow's type hints cannot say that a TaskFlow task takes an XComArg (.output) in place of its value.
    report(extract.output)  # type: ignore[arg-type]


extend_invoice_extraction()
