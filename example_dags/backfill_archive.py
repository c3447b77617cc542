"""Backfill an archive: one task runs an Extend workflow once per document of a folder tree and waits for them all.

``extract_archive`` is one :class:`FlowRunBatchOperator`: it lists every PDF below the archive folder (each
file's path below it is its document key), starts one run per document with at most ``max_in_flight`` alive at
once, waits for all of them in the triggerer, lands each document's outputs under ``{outputs}/{document key}/``
with the batch's ``_MANIFEST.json`` beside them, and succeeds unless more than ``max_failed`` documents failed.
A retry or a cleared task follows the runs that are alive or succeeded and runs again only the documents whose
run failed or was cancelled. ``report`` reads the task's bounded summary (counts and at most 100 failed
document keys), never one XCom entry per document.

``backfill_archive_sharded`` splits the same archive over four mapped tasks: each document falls in exactly
one shard, so four workers upload and start at once without ever running a document twice, and four mapped
tasks stay far below ``[core] max_map_length``. Each shard writes its own manifest.

Airflow Variables: ``flowruns_archive_dir`` (folder or URI of the archive, default ``/data/archive``),
``flowruns_archive_outputs`` (where outputs land, default ``/data/archive-outputs``) and
``flowruns_archive_workflow`` (default the emulator's ``workflow_invoice``).
Connection: ``AIRFLOW_CONN_EXTEND_DEFAULT='{"conn_type": "extend", "password": "<api key>"}'``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import dag, task

from airflow_flowruns.operators.batch import FlowRunBatchOperator

ARCHIVE = "{{ var.value.get('flowruns_archive_dir', '/data/archive') }}"
OUTPUTS = "{{ var.value.get('flowruns_archive_outputs', '/data/archive-outputs') }}"
WORKFLOW = "{{ var.value.get('flowruns_archive_workflow', 'workflow_invoice') }}"
SHARDS = 4
# The emulator's runs take a second. Against a platform keep the default (60 s): each poll lists the batch's runs.
POLL_SECONDS = 1


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["flowruns", "extend", "example"])
def backfill_archive() -> None:
    extract = FlowRunBatchOperator(
        task_id="extract_archive",
        flowruns_conn_id="extend_default",
        flow_id=WORKFLOW,
        documents=f"{ARCHIVE}/**/*.pdf",
        metadata={"backfill": "{{ run_id }}"},
        outputs_to=OUTPUTS,
        max_in_flight=50,
        max_failed=10,
        deferrable=True,
        poll_interval=POLL_SECONDS,
        timeout=24 * 3600,
        retries=2,
    )

    @task
    def report(summary: dict[str, Any]) -> str:
        counts = ", ".join(f"{count} {state}" for state, count in sorted(summary["counts"].items()))
        failed = ", ".join(summary["failed_documents"]) or "none"
        return f"{summary['documents']} documents: {counts}; failed: {failed}; manifest: {summary['manifest']}"

    # Airflow's type hints cannot say that a TaskFlow task takes an XComArg (.output) in place of its value.
    report(extract.output)  # type: ignore[arg-type]


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["flowruns", "extend", "example"])
def backfill_archive_sharded() -> None:
    FlowRunBatchOperator.partial(
        task_id="extract_archive",
        flowruns_conn_id="extend_default",
        flow_id=WORKFLOW,
        documents=f"{ARCHIVE}/**/*.pdf",
        outputs_to=OUTPUTS,
        max_in_flight=12,
        max_failed=10,
        deferrable=True,
        poll_interval=POLL_SECONDS,
        timeout=24 * 3600,
        retries=2,
        shard_count=SHARDS,
    ).expand(shard=list(range(SHARDS)))  # a list: a serialized DAG keeps a range only as its text


backfill_archive()
backfill_archive_sharded()
