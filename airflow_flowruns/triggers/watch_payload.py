"""What an asset watcher's event says about a run: its payload, and the key that identifies it.

Every text in a payload came from the platform, and a platform may echo what it was sent: each is
scrubbed of the connection's secrets (``Platform.secrets``) before it becomes an event, which Airflow
stores in its database and shows in its UI.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from airflow_flowruns.client.errors import scrub
from airflow_flowruns.exceptions import FlowRunsError, is_transient
from airflow_flowruns.platforms.base import FlowRun
from airflow_flowruns.platforms.changes import ChangeSource, run_times

_TASK_KEY = re.compile(r"af-[0-9a-f]{24}")
"""The shape of ``operators.flow_run.task_key``: anything else a platform stores (a StackAI user id a
person chose) is not an Airflow task."""


class Log(Protocol):
    """The trigger's log (Airflow's structlog logger, or a ``logging.Logger``)."""

    def warning(self, event: Any, *args: Any, **kw: Any) -> Any: ...


def dedup_key(run: FlowRun) -> str:
    """The same for every announcement of one run in one state, and for no other."""
    return f"{run.platform}:{run.id}:{run.state.value}"


async def event_payload(
    client: Any, source: ChangeSource, run: FlowRun, key: str, flow_id: str | None, log: Log
) -> dict[str, Any]:
    """The payload of the event announcing ``run`` (``key``), a run of ``flow_id`` when its listing omits it."""
    task_key = await _task_key(client, source, run, flow_id, log)
    payload = {
        "platform": run.platform,
        "flow_id": run.flow_id or flow_id,
        "run_id": run.id,
        "state": run.state.value,
        "status": run.status,
        "url": run.url,
        **run_times(run),
        "task_key": task_key,
        "dedup_key": key,
    }
    platform = client.platform
    return {name: scrub(platform, value) if isinstance(value, str) else value for name, value in payload.items()}


async def _task_key(client: Any, source: ChangeSource, run: FlowRun, flow_id: str | None, log: Log) -> str | None:
    """The key of the Airflow task that started the run, or None for a run started elsewhere.

    Where listing items lack the run's metadata the run is read; a run deleted since it was listed
    is announced without a task key rather than blocking the watcher on a run that is gone.
    """
    if source.task_key_needs_run:
        try:
            run = await client.read_run(run.flow_id or flow_id, run.id)
        except FlowRunsError as exc:
            if is_transient(exc):
                raise
            log.warning(
                "Reading run %s for its task key failed (%s); announcing it without one.",
                scrub(client.platform, run.id),
                scrub(client.platform, str(exc)),
            )
            return None
    task_key = client.platform.task_key_of(run)
    return task_key if isinstance(task_key, str) and _TASK_KEY.fullmatch(task_key) else None
