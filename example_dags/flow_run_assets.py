"""A completed flow run updates an Asset, and the Asset schedules the DAG that uses the extraction.

``extract_invoices`` runs a TableFlow flow with ``outlets=[INVOICE_EXTRACTIONS]``: when the task
succeeds (the run settled and passed the review policy), Airflow records an asset event, and
``load_invoice_extractions``, scheduled on that asset, runs next. A failed run fails the task and
records no event, so nothing downstream starts on a failed extraction.

Files come from the folder in the Airflow Variable ``flowruns_data_dir`` (default ``/data``).
Connection: ``AIRFLOW_CONN_TABLEFLOW_DEFAULT='{"conn_type": "tableflow", "password": "<api key>"}'``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import Asset, dag, task

from airflow_flowruns.operators.flow_run import FlowRunOperator

INVOICE_EXTRACTIONS = Asset("tableflow_invoice_extractions")
DATA = "{{ var.value.get('flowruns_data_dir', '/data') }}"


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["flowruns", "tableflow", "example"])
def flow_run_assets_producer() -> None:
    FlowRunOperator(
        task_id="extract_invoices",
        flowruns_conn_id="tableflow_default",
        flow_id="sm4llFileFlow000",
        files={"document": f"{DATA}/inv.pdf"},
        outlets=[INVOICE_EXTRACTIONS],
        deferrable=True,
        poll_interval=1,
        timeout=600,
    )


@dag(schedule=[INVOICE_EXTRACTIONS], start_date=datetime(2026, 1, 1), catchup=False, tags=["flowruns", "example"])
def flow_run_assets_consumer() -> None:
    @task
    def load_invoice_extractions(triggering_asset_events: Any = None) -> list[str]:
        """Which producing tasks' runs this DAG run picks up, from the events that triggered it."""
        events = (triggering_asset_events or {}).get(INVOICE_EXTRACTIONS, [])
        return [f"{event.source_dag_id}.{event.source_task_id}" for event in events]

    load_invoice_extractions()


flow_run_assets_producer()
flow_run_assets_consumer()
