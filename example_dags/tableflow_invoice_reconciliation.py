"""Reconcile a purchase order against its invoice on TableFlow, then route the result.

The run is started and followed by ``FlowRunOperator`` (deferred to the triggerer); a branch sends
runs that stopped for human review to a review queue and the rest on to the ERP step.

Files are read from the folder in the Airflow Variable ``flowruns_data_dir`` (default ``/data``).
Connection: ``AIRFLOW_CONN_TABLEFLOW_DEFAULT='{"conn_type": "tableflow", "password": "<api key>"}'``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import dag, task

from airflow_flowruns.operators.flow_run import FlowRunOperator

DATA = "{{ var.value.get('flowruns_data_dir', '/data') }}"


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["flowruns", "tableflow", "example"])
def tableflow_invoice_reconciliation() -> None:
    reconcile = FlowRunOperator(
        task_id="reconcile",
        flowruns_conn_id="tableflow_default",
        flow_id="dk4g1tUg1uHLs8YU",
        files={
            "purchase_order": f"{DATA}/po.pdf",
            "invoice": f"{DATA}/inv.pdf",
            "attachments": [f"{DATA}/a.pdf", f"{DATA}/b.pdf"],
        },
        run_name="PO-123 Reconciliation",
        metadata={"customer_id": "12345", "dag_run": "{{ run_id }}"},
        file_metadata={"purchase_order": {"po_number": "PO-123"}},
        file_guidance={"purchase_order": "Strip a trailing REV:n from the PO number"},
        deferrable=True,
        poll_interval=1,
        timeout=600,
        on_review="succeed",
    )

    @task.branch
    def route(run: dict[str, Any]) -> str:
        return "send_to_review_queue" if run["state"] == "needs_review" else "post_to_erp"

    @task
    def post_to_erp(run: dict[str, Any]) -> str:
        return f"posted run {run['id']} ({run['state']}) to the ERP"

    @task
    def send_to_review_queue(run: dict[str, Any]) -> str:
        return f"queued run {run['id']} for review: {run['url']}"

    result = reconcile.output
    # Airflow's type hints cannot say that a TaskFlow task takes an XComArg (.output) in place of its value.
    route(result) >> [post_to_erp(result), send_to_review_queue(result)]  # type: ignore[arg-type]


tableflow_invoice_reconciliation()
