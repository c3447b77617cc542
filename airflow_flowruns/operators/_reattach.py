"""What a task instance gives ``airflow_flowruns.starting`` to start its run at most once: its key, its
try, and its record (the task's state store entry on Airflow 3.3+, and XCom naming a run it replaces)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_flowruns.platforms.start import StartedBy
from airflow_flowruns.starting import RESTART_STATES, TaskLog, TaskTry
from airflow_flowruns.version_compat import AIRFLOW_V_3_3_PLUS, missing_feature

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_flowruns.platforms.base import FlowRun

STATE_STORE_KEY = "flowruns_run"
"""Key of the run (``{"id", "flow_id"}``, plus ``"starting": true`` while a start is under way) in the task's
state store. Renaming it breaks retries in flight."""

PREVIOUS_RUN_ID_KEY = "previous_flow_run_id"
"""XCom key naming the failed or cancelled run of an earlier try that this try's fresh run replaces."""


class TaskRecord:
    """A task instance's ``RunRecord``: the entry under ``STATE_STORE_KEY`` in
    its state store (Airflow 3.3+; without one nothing is saved), and XCom naming a run it replaces."""

    def __init__(self, context: Context) -> None:
        self._store = context.get("task_state_store")
        self._ti = context["ti"]

    def saved(self) -> Mapping[str, Any]:
        if self._store is None:
            if not AIRFLOW_V_3_3_PLUS:
                missing_feature(
                    "Finding an earlier try's run in the task state store (task keys are used instead)", "3.3"
                )
            return {}
        saved = self._store.get(STATE_STORE_KEY)
        return saved if isinstance(saved, dict) else {}

    def save(self, entry: dict[str, Any]) -> None:
        if self._store is not None:
            self._store.set(STATE_STORE_KEY, entry)

    def replacing(self, earlier: FlowRun) -> None:
        self._ti.xcom_push(key=PREVIOUS_RUN_ID_KEY, value=earlier.id)


def task_key(context: Context) -> str:
    """A short, stable id of the task instance: the same on every try, different for every map index."""
    ti = context["ti"]
    parts = (ti.dag_id, ti.task_id, ti.run_id, str(getattr(ti, "map_index", -1)))
    return "af-" + hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:24]


def task_try(context: Context, log: TaskLog) -> TaskTry:
    """The try number, the lookup window (runs of this task instance cannot predate its DAG run; an hour of
    margin absorbs clock skew), ``log``, the task's log, and the DAG and task the runs it starts are for."""
    ti = context["ti"]
    number = getattr(ti, "try_number", 1)
    started = getattr(context.get("dag_run"), "start_date", None)
    dag_id, task_id = getattr(ti, "dag_id", None), getattr(ti, "task_id", None)
    return TaskTry(
        number=number if isinstance(number, int) else 1,
        runs_since=started - timedelta(hours=1) if isinstance(started, datetime) else None,
        log=log,
        started_by=StartedBy(dag_id, task_id) if isinstance(dag_id, str) and isinstance(task_id, str) else None,
    )


__all__ = ["PREVIOUS_RUN_ID_KEY", "RESTART_STATES", "STATE_STORE_KEY", "TaskRecord", "task_key", "task_try"]
