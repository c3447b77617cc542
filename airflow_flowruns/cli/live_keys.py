"""The keys of the task instances Airflow will still act for, read from its metadata database: what tells a run
left over from a task that is gone from a run some task is still following.

The keys are made by the functions the operators stamp their runs with (``task_key``, ``batch_key``), fed the
task instances' identities, so a key here is the key on the run for the same task instance.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

from airflow.models.dagrun import DagRun
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
from sqlalchemy import and_, or_, select
from sqlalchemy.exc import SQLAlchemyError

from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.operators._reattach import task_key
from airflow_flowruns.operators.batch import batch_key

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

RESUMING_STATES = (
    "running",
    "deferred",
    "queued",
    "scheduled",
    "up_for_retry",
    "up_for_reschedule",
    "restarting",
    "awaiting_input",
)
"""Task instance states a task comes back from to follow the run it started (a retry reattaches to it)."""
LIVE_DAG_RUN_STATES = ("queued", "running")
"""Every task instance of such a DAG run counts as live: a later task (a sensor after ``wait_for_completion=False``)
may be following the run an ended one started."""


class TaskIdentity(Protocol):
    """What the key functions read of a task instance."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int


@dataclass(frozen=True)
class LiveKeys:
    task_keys: frozenset[str]
    batch_keys: frozenset[str]

    @classmethod
    def of(cls, instances: Iterable[TaskIdentity]) -> LiveKeys:
        contexts = [cast("Context", {"ti": instance}) for instance in instances]
        return cls(frozenset(map(task_key, contexts)), frozenset(map(batch_key, contexts)))

    def owns(self, key: str) -> bool:
        """Whether a run carrying ``key`` (a task key, or a batch document's run key ``{batch key}.{tag}``) is a
        live task instance's."""
        return key in self.task_keys or key.partition(".")[0] in self.batch_keys


def live_keys() -> LiveKeys:
    """The keys of every task instance in a resuming state or in a live DAG run."""
    ti, run = TaskInstance, DagRun
    query = (
        select(ti.dag_id, ti.task_id, ti.run_id, ti.map_index)
        .join(run, and_(run.dag_id == ti.dag_id, run.run_id == ti.run_id))
        .where(or_(ti.state.in_(RESUMING_STATES), run.state.in_(LIVE_DAG_RUN_STATES)))
    )
    try:
        with create_session() as session:
            return LiveKeys.of(session.execute(query).all())
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or type(exc).__name__).strip().splitlines()[0][:200]
        raise FlowRunsConfigError(
            f"Airflow's metadata database cannot be read ({reason}), and without it no run can be told "
            "orphaned. Run the command where `airflow db check` passes, with the deployment's configuration."
        ) from None
