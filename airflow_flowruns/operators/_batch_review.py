"""A batch's documents in review, each handed to a task instance of its own for review in Airflow.

Airflow keeps one Required Action per task instance, so a batch cannot hold one per document itself: the batch
operator makes a mapped ``FlowRunSensor`` beside it, one task instance
per document left in review, with the document's key in its Required Action's subject. A small hand-off task
returns those documents as a list, because a mapped task expands only over a task's return value. At most
``max_open_reviews`` wait at once, so a reviewer's inbox fills a page at a time as answers come in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import XComArg
from airflow.providers.standard.operators.python import PythonOperator

from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.sensors.flow_run import FlowRunSensor
from airflow_flowruns.waiting import OnReview

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator

    from airflow_flowruns.batch.results import BatchResult

HANDED_TO_REVIEW_KEY = "flowruns_review_documents"
"""XCom key of the documents the batch hands to its review task: the sensor's ``run_id``, ``flow_id``, ``document``."""
REVIEW_TASK_SUFFIX = "_review"
HANDOFF_TASK_SUFFIX = "_in_review"


def add_review_task(batch: Any, task_id: str, max_open_reviews: int | None, assignees: Any) -> Any:
    """The mapped review task, downstream of ``batch`` (a ``FlowRunBatchOperator`` just made), in its DAG and
    task group, with its connection, deferral, poll interval and timeout; None unless ``on_review="airflow"`` in
    a DAG file (a batch made by the worker from a mapped one has none: see ``refuse_review_of_shards``)."""
    if batch.on_review is not OnReview.AIRFLOW or not batch.has_dag() or made_from_mapped(batch):
        return None
    handoff = PythonOperator(
        task_id=f"{task_id}{HANDOFF_TASK_SUFFIX}",
        dag=batch.dag,
        task_group=batch.task_group,
        python_callable=documents_in_review,
        op_kwargs={"batch_task_id": batch.task_id},
    )
    review = FlowRunSensor.partial(
        task_id=f"{task_id}{REVIEW_TASK_SUFFIX}",
        dag=batch.dag,
        task_group=batch.task_group,
        flowruns_conn_id=batch.flowruns_conn_id,
        on_review=OnReview.AIRFLOW.value,
        review_assignees=assignees,
        deferrable=batch.deferrable,
        poke_interval=batch.poll_interval,
        timeout=batch.timeout,
        max_active_tis_per_dagrun=max_open_reviews,
    ).expand_kwargs(XComArg(handoff))
    batch >> handoff
    return review


def documents_in_review(batch_task_id: str, **context: Any) -> list[dict[str, str]]:
    """The hand-off task's callable: the batch's documents in review, as a list Airflow can map over (a
    mapped task expands only over a task's return value, and the batch returns its summary)."""
    handed = context["ti"].xcom_pull(task_ids=batch_task_id, key=HANDED_TO_REVIEW_KEY)
    return list(handed or [])


def refuse_review_of_shards(batch: BaseOperator, on_review: OnReview) -> None:
    """A sharded batch has no review task beside it: refuse ``on_review="airflow"`` before any document starts."""
    if on_review is OnReview.AIRFLOW and made_from_mapped(batch):
        raise FlowRunsConfigError(
            "on_review='airflow' hands documents in review to a review task made beside the batch, which a "
            "mapped (sharded) batch cannot have: use one unmapped batch, or on_review='succeed' with shards."
        )


def made_from_mapped(operator: BaseOperator) -> bool:
    """Whether ``operator`` was made from a mapped one (a shard) by the worker, not by the DAG file: then it has
    no review task beside it, whose expansion the DAG file alone decides."""
    return bool(getattr(operator, "_BaseOperator__from_mapped", False))


def handed_to_review(result: BatchResult, flow_id: str) -> list[dict[str, str]]:
    """The review task's expansion: one sensor's arguments per document in review."""
    return [{"run_id": run_id, "flow_id": flow_id, "document": key} for key, run_id in result.in_review]
