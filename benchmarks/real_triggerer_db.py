"""The real-triggerer benchmark's work inside Airflow's metadata DB; run as a process of its own in the
benchmark's ``AIRFLOW_HOME`` (``python -m benchmarks.real_triggerer_db defer|read PLAN DAG_ID``), so
Airflow's configuration is that home's, never the caller's.

``defer`` leaves the ``follow`` task instances of a new DAG run deferred, with their trigger rows, in one of
two ways, and also defers ``canary`` to the loop-lag canary:

- ``real``: as ``airflow dags test`` runs a DAG, without its inline trigger: the DAG run's scheduling
  decisions (``DagRun.update_state``) make the task instances schedulable, each runs in process through the
  Task SDK's supervisor and the in-process Execution API (``run_task_in_process``): the operator uploads its
  file, starts its run and raises ``TaskDeferred``, and the Execution API writes the trigger row and the
  deferred state. One task at a time: for a few tasks.
- ``bulk``: what that leaves, written through Airflow's ORM: the DAG run's own scheduling decisions expand
  the mapped task into N task instances; each gets a row from ``Trigger.from_object`` (the kwargs
  serialized and encrypted as the Execution API stores them) and the state ``BaseOperator.defer`` leaves
  (``deferred``, ``trigger_id``, ``next_method="execute_complete"``, empty ``next_kwargs``, try 1), for
  runs seeded in the emulator beforehand.

``read`` prints each task instance's state, when the triggerer scheduled it and its event, as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from airflow._shared.timezones import timezone
from airflow.models.dagbag import DBDagBag
from airflow.models.dagrun import DagRun, get_or_create_dagrun
from airflow.models.taskinstance import TaskInstance
from airflow.models.trigger import Trigger, _decode_next_kwargs
from airflow.sdk.serde import serialize
from airflow.utils.session import create_session
from airflow.utils.state import TaskInstanceState
from airflow.utils.types import DagRunTriggeredByType
from sqlalchemy import select
from sqlalchemy.orm import Session

from benchmarks.real_triggerer_triggers import CANARY_TASK, FOLLOW_TASK, TRIGGERS, LoopLagCanary, build_dags

RUN_ID = "bench"


def _new_dag_run(dag_id: str, session: Session) -> DagRun:
    dag = DBDagBag().get_latest_version_of_dag(dag_id, session=session)
    assert dag is not None, f"{dag_id} is not serialized: run `airflow dags reserialize` first"
    now = timezone.utcnow()
    dag_run = get_or_create_dagrun(
        dag=dag,
        run_id=RUN_ID,
        logical_date=None,
        data_interval=None,
        run_after=now,
        conf=None,
        triggered_by=DagRunTriggeredByType.TEST,
        triggering_user_name="benchmark",
        start_date=now,
        session=session,
    )
    dag_run.update_state(session=session)  # expands the mapped task, as the scheduler's decisions do
    session.commit()
    return dag_run


def _task_instances(dag_run: DagRun, task_id: str, session: Session) -> list[TaskInstance]:
    query = select(TaskInstance).where(
        TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id, TaskInstance.task_id == task_id
    )
    return sorted(session.scalars(query), key=lambda ti: ti.map_index)


def _defer(tis: list[TaskInstance], triggers: list[Any], session: Session) -> None:
    """The rows ``BaseOperator.defer`` leaves through the Execution API, written directly."""
    rows = [Trigger.from_object(trigger) for trigger in triggers]
    session.add_all(rows)
    session.flush()
    now = timezone.utcnow()
    for ti, row in zip(tis, rows, strict=True):
        ti.try_number = 1
        ti.start_date = now
        ti.state = TaskInstanceState.DEFERRED
        ti.trigger_id = row.id
        ti.next_method = "execute_complete"
        ti.next_kwargs = serialize({})
        ti.trigger_timeout = None


def defer_bulk(plan: dict[str, Any], dag_run: DagRun, session: Session) -> None:
    run_ids = json.loads(Path(plan["run_ids_file"]).read_text())
    tis = _task_instances(dag_run, FOLLOW_TASK, session)
    assert len(tis) == len(run_ids), (len(tis), len(run_ids))
    cls = TRIGGERS[plan["kind"]]
    deadline = time.time() + plan["timeout"]
    triggers = [
        cls(
            conn_id=plan["conn_id"],
            platform=plan["platform"],
            flow_id=plan["flow_id"],
            run_id=run_id,
            deadline=deadline,
            poll_interval=plan["poll_interval"],
        )
        for run_id in run_ids
    ]
    _defer(tis, triggers, session)
    session.commit()


def defer_real(plan: dict[str, Any], dag_run: DagRun, session: Session) -> None:
    from uuid import UUID

    from airflow.sdk.api.datamodels._generated import TaskInstance as SdkTaskInstance
    from airflow.sdk.execution_time.supervisor import run_task_in_process

    task = build_dags(plan["plan_file"])[plan["dag_id"]].task_dict[FOLLOW_TASK]
    for ti in _task_instances(dag_run, FOLLOW_TASK, session):
        ti.try_number += 1
        ti.state = TaskInstanceState.QUEUED  # the Execution API runs only a queued task instance
        session.commit()
        sdk_ti = SdkTaskInstance(
            id=UUID(str(ti.id)),
            task_id=ti.task_id,
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            try_number=ti.try_number,
            map_index=ti.map_index,
            dag_version_id=UUID(str(ti.dag_version_id)),
        )
        result = run_task_in_process(ti=sdk_ti, task=task)
        assert result.ti.state == TaskInstanceState.DEFERRED, f"{ti.task_id}[{ti.map_index}]: {result.ti.state}"
    session.expire_all()


def defer(plan: dict[str, Any]) -> dict[str, Any]:
    start = time.monotonic()
    with create_session() as session:
        dag_run = _new_dag_run(plan["dag_id"], session)
        (defer_real if plan["mode"] == "real" else defer_bulk)(plan, dag_run, session)
        (canary,) = _task_instances(dag_run, CANARY_TASK, session)
        _defer([canary], [LoopLagCanary(path=plan["canary_file"])], session)
        session.commit()
        deferred = sum(ti.state == TaskInstanceState.DEFERRED for ti in _task_instances(dag_run, FOLLOW_TASK, session))
    return {"deferred": deferred, "seconds": time.monotonic() - start}


def read(plan: dict[str, Any]) -> list[dict[str, Any]]:
    with create_session() as session:
        dag_run = session.scalars(select(DagRun).where(DagRun.dag_id == plan["dag_id"])).one()
        out = []
        for ti in _task_instances(dag_run, FOLLOW_TASK, session):
            event = _decode_next_kwargs(ti.next_kwargs or {}).get("event") if ti.state != "deferred" else None
            scheduled = ti.scheduled_dttm.timestamp() if ti.scheduled_dttm and event else None
            out.append({"map_index": ti.map_index, "state": ti.state, "scheduled_at": scheduled, "event": event})
    return out


def main() -> None:
    command, plan_file, dag_id = sys.argv[1:4]
    plan = next(p for p in json.loads(Path(plan_file).read_text()) if p["dag_id"] == dag_id)
    plan["plan_file"] = plan_file
    print(json.dumps(defer(plan) if command == "defer" else read(plan)))


if __name__ == "__main__":
    main()
