"""Never a second run: which run an earlier try of this task instance started, and whether to follow it.

Airflow 3.3's ``ResumableJobMixin`` convention: on a retry (or a cleared task) follow the earlier run while
it is queued, running, waiting for review or succeeded; start a fresh one when it failed or was cancelled.
The earlier run is found first in the task's state store (Airflow 3.3+), where the run id is saved the
moment the start call returns, and otherwise by the task key the platform keeps on the run. Unlike the
mixin, which names the gap between a start returning and its save as a known limit, a try notes in the
store that it is starting a run before the start call: a note never followed by a save tells the next try
to look the task key up for the run a dead worker may have started.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_flowruns.exceptions import FlowRunsApiError
from airflow_flowruns.platforms.base import FlowRun, RunState
from airflow_flowruns.version_compat import AIRFLOW_V_3_3_PLUS, missing_feature

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_flowruns.hooks.flow_run import FlowRunsHook

STATE_STORE_KEY = "flowruns_run"
"""Key of the run (``{"id", "flow_id"}``, plus ``"starting": true`` while a start is under way) in the task's
state store. Renaming it breaks retries in flight."""

RESTART_STATES = frozenset({RunState.FAILED, RunState.CANCELLED})
"""An earlier run in one of these states is re-run by a retry; in any other it is followed."""

log = logging.getLogger(__name__)


def state_store(context: Context) -> Any:
    """The task's state store (Airflow 3.3+), or None where Airflow has none."""
    return context.get("task_state_store")


def note_start(context: Context, earlier: FlowRun | None) -> None:
    """Before a start call: this try is starting a run, after ``earlier`` (still named). A worker that dies
    before :func:`save_run` leaves the note, so the next try looks for the run it may have started."""
    store = state_store(context)
    if store is not None:
        saved = {"id": earlier.id, "flow_id": earlier.flow_id} if earlier else {"id": None, "flow_id": None}
        store.set(STATE_STORE_KEY, {**saved, "starting": True})


def save_run(context: Context, run: FlowRun) -> None:
    """Remember the run the moment it is started, so a crashed worker's retry finds it without a listing."""
    store = state_store(context)
    if store is not None:
        store.set(STATE_STORE_KEY, {"id": run.id, "flow_id": run.flow_id})


def earlier_run(hook: FlowRunsHook, flow_id: str, key: str, context: Context) -> FlowRun | None:
    """The newest run an earlier try of this task instance started, in its current state, or None.

    The state store names the run the last try saved, read directly. When a try noted a start it never
    saved (its worker died after the start call), the run it may have started is looked up by task key,
    newer than the saved one: otherwise the next try would start another run next to a live one. Without
    a store, or with nothing in it, a retry looks the task key up as well.
    """
    saved = saved_entry(context)
    run = saved_run(hook, flow_id, saved)
    if run is not None and not saved.get("starting"):
        return run
    if run is None and try_number(context) <= 1:
        return None
    newer_than = run.id if run else None
    return hook.find_run_for_task(flow_id, key, lookup_window_start(context), newer_than=newer_than) or run


def saved_entry(context: Context) -> dict[str, Any]:
    """What the task's state store holds under ``STATE_STORE_KEY``; empty without a store or an entry."""
    store = state_store(context)
    if store is None:
        if not AIRFLOW_V_3_3_PLUS:
            missing_feature("Finding an earlier try's run in the task state store (task keys are used instead)", "3.3")
        return {}
    saved = store.get(STATE_STORE_KEY)
    return saved if isinstance(saved, dict) else {}


def saved_run(hook: FlowRunsHook, flow_id: str, saved: dict[str, Any]) -> FlowRun | None:
    """The run ``saved`` names, read now; None where it names none, or the platform no longer knows it (404)."""
    if not isinstance(saved.get("id"), str):
        return None
    try:
        return hook.get_run(saved.get("flow_id") or flow_id, saved["id"])
    except FlowRunsApiError as exc:
        if exc.status != 404:
            raise
        log.warning("Run %s saved by an earlier try is gone (HTTP 404); looking it up by task key.", saved["id"])
        return None


def try_number(context: Context) -> int:
    number = getattr(context["ti"], "try_number", 1)
    return number if isinstance(number, int) else 1


def lookup_window_start(context: Context) -> datetime | None:
    """Runs of this task instance cannot predate its DAG run; an hour of margin absorbs clock skew."""
    dag_run = context.get("dag_run")
    started = getattr(dag_run, "start_date", None)
    return started - timedelta(hours=1) if isinstance(started, datetime) else None
