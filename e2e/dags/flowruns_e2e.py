"""The DAG ``make e2e`` triggers: one deferrable ``FlowRunOperator`` per document, mapped over a plan.

The plan (connection, flow and file of every map index) arrives in the DAG run's conf, so the e2e
runner alone decides platforms and outcomes, and this file needs no data of its own. ``retries=1`` lets
a task whose worker was killed come back and re-attach to the run it had started.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import dag, get_current_context, task

from airflow_flowruns.operators.flow_run import FlowRunOperator

DAG_ID = "flowruns_e2e"
TASK_ID = "flow_run"


@dag(dag_id=DAG_ID, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["flowruns", "e2e"])
def flowruns_e2e() -> None:
    @task
    def plan() -> list[dict[str, Any]]:
        conf = get_current_context()["dag_run"].conf or {}
        return list(conf["runs"])

    FlowRunOperator.partial(
        task_id=TASK_ID,
        deferrable=True,
        poll_interval=3,
        timeout=1800,
        on_review="succeed",
        retries=1,
        retry_delay=timedelta(seconds=2),
    ).expand_kwargs(plan())


flowruns_e2e()
