"""Invoices in, rows out: extract every invoice of a folder with Extend, land each run's outputs, load the
extracted vendor, invoice number and total into a database table, and count its rows.

* ``extract`` maps :class:`FlowRunOperator` over the folder's PDFs (one Extend run per file) with
  ``outputs_to``: each run's outputs land under ``{outputs}/extend/{workflow}/{run_id}/``.
* ``load_invoices`` reads each landing's ``outputs.json`` (the provider's normalized shape) and upserts one
  row per run, keyed by run id, so a re-run of the DAG never duplicates rows.
* ``count_rows`` counts the table's rows.

The table is SQLite, through Airflow's ``common.sql`` (``SQLExecuteQueryOperator``, and the connection's
``DbApiHook`` for the upsert and the count): a file database needing no server, behind the same hook API
as PostgreSQL or Snowflake, so pointing ``invoices_db`` at another database changes no code (the upsert is
the only SQLite-flavoured statement: ``REPLACE INTO``).

Variables: ``flowruns_invoices_dir`` (folder or URI of the invoices), ``flowruns_outputs_dir`` (where
outputs land), ``extend_invoice_workflow`` (default ``workflow_invoice``).
Connections: ``AIRFLOW_CONN_EXTEND_DEFAULT='{"conn_type": "extend", "password": "<api key>"}'`` and
``AIRFLOW_CONN_INVOICES_DB='{"conn_type": "sqlite", "host": "/data/invoices.db"}'``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.sdk import BaseHook, ObjectStoragePath, dag, task

from airflow_flowruns.operators.flow_run import FlowRunOperator

DB_CONN = "invoices_db"
COLUMNS = ("run_id", "vendor", "invoice_number", "total", "currency", "lowest_confidence", "reviewed", "landing")


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["flowruns", "extend", "example"])
def invoices_to_database() -> None:
    @task
    def list_invoices(folder: str) -> list[dict[str, str]]:
        """One ``files`` argument per invoice: an Extend run processes exactly one file."""
        return [{"file": str(path)} for path in sorted(ObjectStoragePath(folder).iterdir()) if path.suffix == ".pdf"]

    extract = FlowRunOperator.partial(
        task_id="extract",
        flowruns_conn_id="extend_default",
        flow_id="{{ var.value.get('extend_invoice_workflow', 'workflow_invoice') }}",
        outputs_to="{{ var.value.flowruns_outputs_dir }}",
        poll_interval=1,
        timeout=600,
    ).expand(files=list_invoices("{{ var.value.flowruns_invoices_dir }}"))

    create_table = SQLExecuteQueryOperator(
        task_id="create_table",
        conn_id=DB_CONN,
        sql="""CREATE TABLE IF NOT EXISTS invoices (
            run_id TEXT PRIMARY KEY, vendor TEXT, invoice_number TEXT, total REAL, currency TEXT,
            lowest_confidence REAL, reviewed INTEGER, landing TEXT
        )""",
    )

    @task(multiple_outputs=False)
    def load_invoices(results: list[dict[str, Any]]) -> dict[str, int]:
        """Upsert one row per landed run; output values go to the table, never to the logs or XCom."""
        rows = [invoice_row(result["landing"]["path"]) for result in results]
        hook = BaseHook.get_connection(DB_CONN).get_hook()
        hook.insert_rows("invoices", rows, target_fields=COLUMNS, replace=True)
        return {"rows": len(rows)}

    @task(multiple_outputs=False)
    def count_rows() -> dict[str, int]:
        (count,) = BaseHook.get_connection(DB_CONN).get_hook().get_first("SELECT COUNT(*) FROM invoices")
        return {"rows": int(count)}

    # Airflow's type hints cannot say that a TaskFlow task takes an XComArg (.output) in place of its value.
    create_table >> load_invoices(extract.output) >> count_rows()  # type: ignore[arg-type]


def invoice_row(landing: str) -> tuple[Any, ...]:
    """The table row of one landed run, from its ``outputs.json``."""
    document = json.loads((ObjectStoragePath(landing) / "outputs.json").read_text())
    fields = {output["name"]: output for output in document["outputs"] if output["kind"] == "field"}
    wanted = ("vendor", "invoice_number", "total", "currency")
    confidences = [fields[name]["confidence"] for name in wanted if fields.get(name, {}).get("confidence") is not None]
    return (
        document["run_id"],
        *(fields.get(name, {}).get("value") for name in wanted),
        min(confidences, default=None),
        int(document["reviewed"]),
        landing,
    )


invoices_to_database()
