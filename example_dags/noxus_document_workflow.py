"""Summarize a document with a Noxus workflow: the file goes to the ``document`` input, text to the others.

Files are read from the folder in the Airflow Variable ``flowruns_data_dir`` (default ``/data``).
Connection: ``AIRFLOW_CONN_NOXUS_DEFAULT='{"conn_type": "noxus", "password": "<api key>"}'``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import dag, task

from airflow_flowruns.operators.flow_run import FlowRunOperator


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["flowruns", "noxus", "example"])
def noxus_document_workflow() -> None:
    summarize = FlowRunOperator(
        task_id="summarize",
        flowruns_conn_id="noxus_default",
        flow_id="5f0c7d1e-0000-4000-8000-00000000d0c1",
        files={"document": "{{ var.value.get('flowruns_data_dir', '/data') }}/doc.pdf"},
        inputs={"instructions": "Summarize the document for run {{ run_id }}"},
        deferrable=True,
        poll_interval=1,
        timeout=600,
    )

    @task
    def report(run: dict[str, Any]) -> str:
        return f"Noxus run {run['id']} ended {run['state']}"

    # Airflow's type hints cannot say that a TaskFlow task takes an XComArg (.output) in place of its value.
    report(summarize.output)  # type: ignore[arg-type]


noxus_document_workflow()
