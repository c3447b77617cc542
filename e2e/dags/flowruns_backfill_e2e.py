"""The DAG ``make e2e-backfill`` triggers: one deferrable ``FlowRunBatchOperator`` per platform in one DAG run.

Each task takes its documents another way: TableFlow a folder (every file below it), Extend a glob, Noxus a
list of mappings with keys of their own. Where the documents are, and where outputs and manifests go, arrive
in the DAG run's conf (rendered as native objects, so the Noxus list stays a list), so the e2e runner alone
decides the files; how many failed documents each task tolerates, and how many tries it has, are fixed
here, and the runner plans its failures against them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import dag

from airflow_flowruns.operators.batch import FlowRunBatchOperator
from airflow_flowruns.platforms.extend.emulator import EXTEND_INVOICE_WORKFLOW
from airflow_flowruns.platforms.noxus.emulator import NOXUS_DOCUMENT_WORKFLOW
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_SMALL_FILE_FLOW

DAG_ID = "flowruns_backfill_e2e"


@dataclass(frozen=True)
class BatchTask:
    """One batch task of the DAG: its platform and flow, and the rules that decide its state."""

    platform: str
    task_id: str
    flow_id: str
    retries: int
    max_failed: int
    min_succeeded: int | None = None
    file_field: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    max_in_flight: int | None = None
    keeps_metadata: bool = True
    """The platform keeps run metadata (Noxus refuses it)."""
    lands_outputs: bool = True
    """Outputs land at ``outputs_to`` (the manifest beside them); otherwise only the manifest, at ``manifest_to``."""

    @property
    def conn_id(self) -> str:
        return f"{self.platform}_e2e"


TASKS = (
    # Two retries: the first try loses its worker while it starts runs, so the second may still meet failures.
    BatchTask("tableflow", "tableflow_batch", TABLEFLOW_SMALL_FILE_FLOW, retries=2, max_failed=0),
    BatchTask("extend", "extend_batch", EXTEND_INVOICE_WORKFLOW, retries=1, max_failed=3),
    BatchTask(
        "noxus",
        "noxus_batch",
        NOXUS_DOCUMENT_WORKFLOW,
        retries=1,
        max_failed=2,
        min_succeeded=1,
        file_field="document",
        inputs={"instructions": "Summarize the document"},
        max_in_flight=100,
        keeps_metadata=False,
        lands_outputs=False,
    ),
)


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    render_template_as_native_obj=True,
    tags=["flowruns", "e2e"],
)
def flowruns_backfill_e2e() -> None:
    for batch in TASKS:
        conf = f"dag_run.conf['{batch.platform}']"
        FlowRunBatchOperator(
            task_id=batch.task_id,
            flowruns_conn_id=batch.conn_id,
            flow_id=batch.flow_id,
            documents=f"{{{{ {conf}['documents'] }}}}",
            file_field=batch.file_field,
            inputs=batch.inputs or None,
            metadata={"e2e": "backfill"} if batch.keeps_metadata else None,
            outputs_to=f"{{{{ {conf}['outputs_to'] }}}}" if batch.lands_outputs else None,
            manifest_to=None if batch.lands_outputs else f"{{{{ {conf}['manifest_to'] }}}}",
            max_failed=batch.max_failed,
            min_succeeded=batch.min_succeeded,
            max_in_flight=batch.max_in_flight,
            on_review="succeed",
            deferrable=True,
            poll_interval=3,
            timeout=1800,
            retries=batch.retries,
            retry_delay=timedelta(seconds=3),
        )


flowruns_backfill_e2e()
