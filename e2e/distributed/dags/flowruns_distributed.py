"""The DAG ``make e2e-distributed`` triggers: documents split between a deferrable and a worker-waiting task.

``deferred`` hands each run to a triggerer; ``waiting`` polls it from its Celery worker slot, the way a
deployment without triggerers (or a task with ``deferrable=False``) follows its runs. The plan (connection,
flow and file of every map index of each task) arrives in the DAG run's conf, so the e2e runner alone
decides platforms and outcomes. ``retries=2``: a try lost with its worker comes back on another worker,
and a failed run is started once more, then once more again.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import dag, get_current_context, task

from airflow_flowruns.operators.flow_run import FlowRunOperator

DAG_ID = "flowruns_distributed"
TASKS = {"deferred": True, "waiting": False}
"""Task id and whether it defers."""


@task
def plan(kind: str) -> list[dict[str, Any]]:
    conf = get_current_context()["dag_run"].conf or {}
    return list(conf["runs"][kind])


@dag(dag_id=DAG_ID, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["flowruns", "e2e"])
def flowruns_distributed() -> None:
    for task_id, deferrable in TASKS.items():
        FlowRunOperator.partial(
            task_id=task_id,
            deferrable=deferrable,
            poll_interval=3,
            timeout=1800,
            on_review="succeed",
            retries=2,
            retry_delay=timedelta(seconds=2),
        ).expand_kwargs(plan.override(task_id=f"plan_{task_id}")(task_id))


flowruns_distributed()
