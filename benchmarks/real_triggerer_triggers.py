"""What the real-triggerer benchmark runs inside ``airflow triggerer``: its triggers, canary and DAGs.

The triggerer imports these by class path, so they report through Airflow itself: each trigger's event
carries the wall-clock times of its polls (the task instance's ``next_kwargs`` keeps them once the
triggerer has delivered it), and the canary appends how late each of its 100 ms sleeps woke to a file.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_flowruns.operators.flow_run import FlowRunOperator
from airflow_flowruns.platforms.base import FlowRun
from airflow_flowruns.triggers.flow_run import FlowRunTrigger
from benchmarks.trigger_density import SessionPerPollTrigger

CANARY_TASK = "canary"
FOLLOW_TASK = "follow"


class PollTimes(FlowRunTrigger):
    """Records when it polled and puts those times in its event, so polls are counted per task instance."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.poll_times: list[float] = []

    async def poll(self) -> FlowRun:
        self.poll_times.append(time.time())
        return await super().poll()

    def _event(self, outcome: str, **payload: Any) -> TriggerEvent:
        return super()._event(outcome, poll_times=self.poll_times, **payload)


class ShippedTrigger(PollTimes):
    """``FlowRunTrigger`` as it ships (shared client, listing or change feed), its polls timed."""


class SessionPerPoll(PollTimes, SessionPerPollTrigger):
    """The density benchmark's baseline (a new aiohttp session and TLS handshake per poll), its polls timed."""


TRIGGERS: dict[str, type[PollTimes]] = {"shared": ShippedTrigger, "session-per-poll": SessionPerPoll}


class LoopLagCanary(BaseTrigger):
    """Sleeps ``heartbeat`` seconds over and over in the triggerer's event loop and writes how late each sleep
    woke (``time lag`` lines, appended every second) to ``path``; fires once ``path.stop`` exists."""

    def __init__(self, path: str, heartbeat: float = 0.1) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.path = path
        self.heartbeat = heartbeat

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {"path": self.path, "heartbeat": self.heartbeat}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        out, stop = Path(self.path), Path(self.path + ".stop")
        lines: list[str] = []
        flushed = time.monotonic()
        while True:
            start = time.monotonic()
            await asyncio.sleep(self.heartbeat)
            woke = time.monotonic()
            lines.append(f"{time.time():.3f} {woke - start - self.heartbeat:.6f}\n")
            if woke - flushed >= 1.0:
                with out.open("a") as file:
                    file.writelines(lines)
                lines, flushed = [], woke
                if stop.exists():
                    yield TriggerEvent({"samples": "written"})
                    return


class TimedFlowRunOperator(FlowRunOperator):
    """``FlowRunOperator`` deferring to the benchmark's timed trigger of ``trigger_kind``, same arguments."""

    def __init__(self, *, trigger_kind: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trigger_kind = trigger_kind

    def defer(self, *, trigger: BaseTrigger, method_name: str, **kwargs: Any) -> NoReturn:
        _, trigger_kwargs = trigger.serialize()
        super().defer(trigger=TRIGGERS[self.trigger_kind](**trigger_kwargs), method_name=method_name, **kwargs)


def build_dags(plan_file: str) -> dict[str, DAG]:
    """One DAG per configuration in ``plan_file`` (JSON): ``follow`` mapped over N documents, and ``canary``.

    The DAG file in the benchmark's dags folder calls this, so the DAG processor code (``dags reserialize``
    and the bundle sync ``dags test`` does) writes their serialized versions as for any DAG.
    """
    dags = {}
    for config in json.loads(Path(plan_file).read_text()):
        with DAG(config["dag_id"], schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
            TimedFlowRunOperator.partial(
                task_id=FOLLOW_TASK,
                trigger_kind=config["kind"],
                flowruns_conn_id=config["conn_id"],
                flow_id=config["flow_id"],
                files={config["file_field"]: config["file"]},
                deferrable=True,
                poll_interval=config["poll_interval"],
                timeout=config["timeout"],
                max_active_tis_per_dag=config["n"],
            ).expand(run_name=[f"doc-{i:05d}" for i in range(config["n"])])
            EmptyOperator(task_id=CANARY_TASK)
        dags[config["dag_id"]] = dag
    return dags
