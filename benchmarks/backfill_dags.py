"""The DAGs of the backfill benchmark, built inside Airflow from the settings its DAG file passes.

Two DAGs per platform, each taking the folder of documents from its DAG run's ``conf``:

- ``backfill_mapped_<platform>``: a task lists the folder, and a deferrable ``FlowRunOperator`` is mapped over
  its files, one task instance per document: how a backfill is written without a batch operator;
- ``backfill_batch_<platform>``: one deferrable ``FlowRunBatchOperator`` over the folder.

Only the modes a benchmark run measures are built, so a run of one mode imports only its operator. Every
task has one retry, as a deployment would set: a deferred task whose trigger fires within seconds of its
deferral can meet Airflow's race between the executor's report of the deferral and the trigger's event
(apache/airflow#66374, #72716), which fails the try; its retry follows the run it started.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, get_current_context, task

MAPPED, BATCH = "mapped", "batch"
LIST_TASK, FOLLOW_TASK, BATCH_TASK = "list_documents", "flow_run", "backfill"
FOLDER = "{{ dag_run.conf['folder'] }}"
DAG_ARGUMENTS: dict[str, Any] = {
    "schedule": None,
    "start_date": datetime(2026, 1, 1),
    "catchup": False,
    "default_args": {"retries": 1, "retry_delay": timedelta(seconds=5)},
}


def dag_id(mode: str, platform: str) -> str:
    return f"backfill_{mode}_{platform}"


@task(task_id=LIST_TASK)
def list_documents(file_field: str) -> list[dict[str, str]]:
    """The ``files`` argument of one mapped task instance per file under the DAG run's folder, in path order."""
    folder = Path((get_current_context()["dag_run"].conf or {})["folder"])
    return [{file_field: str(path)} for path in sorted(folder.rglob("*")) if path.is_file()]


def mapped_dag(platform: dict[str, Any], settings: dict[str, Any]) -> DAG:
    from airflow_flowruns.operators.flow_run import FlowRunOperator

    with DAG(dag_id(MAPPED, platform["name"]), **DAG_ARGUMENTS) as dag:
        FlowRunOperator.partial(
            task_id=FOLLOW_TASK,
            flowruns_conn_id=platform["conn_id"],
            flow_id=platform["flow_id"],
            deferrable=True,
            poll_interval=settings["poll_interval"],
            timeout=settings["timeout"],
        ).expand(files=list_documents(platform["file_field"]))
    return dag


def batch_dag(platform: dict[str, Any], settings: dict[str, Any]) -> DAG:
    from airflow_flowruns.operators.batch import FlowRunBatchOperator

    with DAG(dag_id(BATCH, platform["name"]), **DAG_ARGUMENTS) as dag:
        FlowRunBatchOperator(
            task_id=BATCH_TASK,
            flowruns_conn_id=platform["conn_id"],
            flow_id=platform["flow_id"],
            documents=FOLDER,
            deferrable=True,
            poll_interval=settings["poll_interval"],
            timeout=settings["timeout"],
        )
    return dag


BUILDERS = {MAPPED: mapped_dag, BATCH: batch_dag}


def build_dags(settings: dict[str, Any]) -> dict[str, DAG]:
    """The DAG of every mode and platform in ``settings`` (``modes``, ``platforms``: name, conn_id, flow_id,
    file_field; ``poll_interval``, ``timeout``); the benchmark's DAG file calls this."""
    return {
        dag_id(mode, platform["name"]): BUILDERS[mode](platform, settings)
        for mode in settings["modes"]
        for platform in settings["platforms"]
    }
