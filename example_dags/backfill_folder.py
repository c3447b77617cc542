"""Backfill a folder: one TableFlow run per document, mapped, throttled, then routed by review state.

``list_documents`` lists the folder (any object storage: ``file://``, ``s3://``, ``gs://``, ...) and
returns one ``files`` mapping per document; ``FlowRunOperator.partial(...).expand(files=...)`` maps one
task, so one run, over each. ``max_active_tis_per_dag`` caps the runs in flight at once (Airflow counts
deferred tasks too), which keeps uploads and polls within the platform's rate limit; the connection
extra ``max_requests_per_second`` caps the requests themselves. Re-running a failed map index starts
only that document again.

``route`` looks at every run: runs that stopped for human review go to the review queue, the others on
to the ERP; with both kinds, both branches run.

Airflow Variables: ``flowruns_backfill_dir`` (default ``file:///data/backfill``) and
``flowruns_backfill_flow`` (a flow with one ``document`` field; default the emulator's review flow).
Connection: ``AIRFLOW_CONN_TABLEFLOW_DEFAULT='{"conn_type": "tableflow", "password": "<api key>"}'``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import ObjectStoragePath, dag, task

from airflow_flowruns.operators.flow_run import FlowRunOperator

FOLDER = "{{ var.value.get('flowruns_backfill_dir', 'file:///data/backfill') }}"
FLOW = "{{ var.value.get('flowruns_backfill_flow', 'rv7Qm2ReviewFlow0') }}"
RUNS_IN_FLIGHT = 4


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["flowruns", "tableflow", "example"])
def backfill_folder() -> None:
    @task
    def list_documents(folder: str) -> list[dict[str, str]]:
        """One ``files`` argument per PDF in the folder, in a stable order so map indexes stay put."""
        documents = sorted(ObjectStoragePath(folder).glob("*.pdf"), key=str)
        return [{"document": str(path)} for path in documents]

    # One task instance per document: for folders under [core] max_map_length; larger ones: backfill_archive.py.
    extract = FlowRunOperator.partial(
        task_id="extract",
        flowruns_conn_id="tableflow_default",
        flow_id=FLOW,
        max_active_tis_per_dag=RUNS_IN_FLIGHT,
        metadata={"backfill": "{{ run_id }}"},
        deferrable=True,
        poll_interval=1,
        timeout=3600,
        on_review="succeed",
    ).expand(files=list_documents(FOLDER))

    @task.branch
    def route(runs: list[dict[str, Any]]) -> list[str]:
        targets = []
        if any(run["state"] == "needs_review" for run in runs):
            targets.append("send_to_review_queue")
        if any(run["state"] != "needs_review" for run in runs):
            targets.append("post_to_erp")
        return targets

    @task
    def post_to_erp(runs: list[dict[str, Any]]) -> list[str]:
        return [run["id"] for run in runs if run["state"] != "needs_review"]

    @task
    def send_to_review_queue(runs: list[dict[str, Any]]) -> list[str]:
        return [run["url"] for run in runs if run["state"] == "needs_review"]

    results = extract.output
    # Airflow's type hints cannot say that a TaskFlow task takes an XComArg (.output) in place of its value.
    route(results) >> [post_to_erp(results), send_to_review_queue(results)]  # type: ignore[arg-type]


backfill_folder()
