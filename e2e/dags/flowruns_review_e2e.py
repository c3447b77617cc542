"""The DAG ``make e2e-review`` triggers: mapped ``FlowRunOperator`` tasks under ``on_review="airflow"``.

Each task maps over its share of the runner's plan (connection, flow, file and landing folder of every map
index), which arrives in the DAG run's conf, so the runner alone decides platforms and answers. The tasks
differ in what the review proves:

- ``answered``: the person answers in Airflow (accept, accept with edits, reject, wait); two retries, so a
  rejected document proves it is never retried;
- ``vendor``: the review ends in the vendor's app, alone or at the same instant as an answer in Airflow; no
  retries, so a run the vendor's reviewer failed stays the task's only run;
- ``not_deferrable``: the same answers to a ``deferrable=False`` task, which follows its run in the worker
  until the review starts and then defers all the same (only the triggerer may read a Required Action);
- ``confidence``: Extend runs that finish without review, sent to review by ``review_below_confidence``;
- ``batch``: a ``FlowRunBatchOperator`` over a folder of Extend documents, which hands each document in review
  to its mapped review task ``batch_review``, one Required Action per document.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import dag, get_current_context, task

from airflow_flowruns.get_provider_info import DEFAULT_MIN_POLL_INTERVAL
from airflow_flowruns.operators._batch_review import REVIEW_TASK_SUFFIX
from airflow_flowruns.operators.batch import FlowRunBatchOperator
from airflow_flowruns.operators.flow_run import FlowRunOperator
from airflow_flowruns.platforms.extend.emulator import EXTEND_REVIEW_WORKFLOW

DAG_ID = "flowruns_review_e2e"
CONFIDENCE_THRESHOLD = 0.9
"""Above the emulated Extend extraction's weakest field (0.41) and below the others (0.97)."""
REVIEW_TIMEOUT = 900
"""Seconds a task waits for its review before it gives up: a review nobody decides ends the task well after
the runner has given up on it."""
BATCH_TASK_ID = "batch"
BATCH_REVIEW_TASK_ID = f"{BATCH_TASK_ID}{REVIEW_TASK_SUFFIX}"


@dataclass(frozen=True)
class ReviewTask:
    """One mapped task of the DAG and how it waits."""

    task_id: str
    deferrable: bool
    retries: int
    lands_outputs: bool
    review_below_confidence: float | None = None


TASKS = (
    ReviewTask("answered", deferrable=True, retries=2, lands_outputs=True),
    ReviewTask("vendor", deferrable=True, retries=0, lands_outputs=False),
    ReviewTask("not_deferrable", deferrable=False, retries=2, lands_outputs=True),
    ReviewTask(
        "confidence", deferrable=True, retries=2, lands_outputs=True, review_below_confidence=CONFIDENCE_THRESHOLD
    ),
)


@dag(dag_id=DAG_ID, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["flowruns", "e2e"])
def flowruns_review_e2e() -> None:
    @task
    def plan(task_id: str) -> list[dict[str, Any]]:
        conf = get_current_context()["dag_run"].conf or {}
        return list(conf.get(task_id) or [])

    for review in TASKS:
        FlowRunOperator.partial(
            task_id=review.task_id,
            deferrable=review.deferrable,
            poll_interval=DEFAULT_MIN_POLL_INTERVAL,
            timeout=REVIEW_TIMEOUT,
            on_review="airflow",
            review_below_confidence=review.review_below_confidence,
            retries=review.retries,
            retry_delay=timedelta(seconds=2),
        ).expand_kwargs(plan.override(task_id=f"plan_{review.task_id}")(review.task_id))
    FlowRunBatchOperator(
        task_id=BATCH_TASK_ID,
        flowruns_conn_id="extend_e2e",
        flow_id=EXTEND_REVIEW_WORKFLOW,
        documents="{{ dag_run.conf['batch'] }}",
        on_review="airflow",
        deferrable=True,
        poll_interval=DEFAULT_MIN_POLL_INTERVAL,
        timeout=REVIEW_TIMEOUT,
    )


flowruns_review_e2e()
