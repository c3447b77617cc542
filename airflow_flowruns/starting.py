"""Start the run of a key at most once across tries: never bill a document twice.

A key names what one run is for: a task instance (``FlowRunOperator``), or one document among those a task
instance starts a run for each. The platform keeps the key on every run it starts
(``task_key``), so the run can be found again.

The rule is Airflow 3.3's ``ResumableJobMixin`` convention: a retry (or a cleared task) follows the run an
earlier try started while it is queued, running, waiting for review or succeeded, and starts a fresh one when
it failed or was cancelled (``RESTART_STATES``), naming the run it replaces. The earlier run is found
first in the key's ``RunRecord`` (a task's state store on Airflow 3.3+), where the run id is saved the
moment the start call returns, and otherwise by the key. Unlike the mixin, which names the gap between a
start returning and its save as a known limit, a try notes in the record that it is starting a run before
the start call: a note never followed by a save tells the next try to look the key up for the run a dead
worker may have started.

A start call that failed in a way the platform may still have accepted (a timeout, a dropped connection, a
5xx, an unreadable answer: ``outcome_unknown``) is never sent again blindly: the run is looked up by its key,
and only when no run newer than the earlier one is found is the start sent again, at most
``START_ATTEMPTS`` calls per try.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from airflow_flowruns.exceptions import FlowRunsApiError, FlowRunsResponseError
from airflow_flowruns.platforms.base import FlowRun, RunState
from airflow_flowruns.platforms.start import keyed_files

if TYPE_CHECKING:
    from airflow_flowruns.hooks.flow_run import FlowRunsHook
    from airflow_flowruns.platforms.start import StartedBy, StartRequest

RESTART_STATES = frozenset({RunState.FAILED, RunState.CANCELLED})
"""An earlier run in one of these states is re-run by a retry; in any other it is followed."""

START_ATTEMPTS = 3
"""Start calls sent for one try when each failed ambiguously and the lookup found no run behind it."""


class RunRecord(Protocol):
    """Where the run of one key is kept across tries, and where a run it replaces is named: for a task
    instance its state store entry and XCom, for one document of a batch its entry in the batch's ledger.

    An entry is ``{"id", "flow_id"}`` of the run, plus ``"starting": True`` while a start is under way.
    """

    def saved(self) -> Mapping[str, Any]:
        """The entry an earlier try saved; empty where it saved none, or where nothing can be saved."""
        ...

    def save(self, entry: dict[str, Any]) -> None:
        """Replace the entry, for the next try; nothing where nothing can be saved."""
        ...

    def replacing(self, earlier: FlowRun) -> None:
        """Name the failed or cancelled run of an earlier try that the run about to start replaces."""
        ...


class TaskLog(Protocol):
    """The task's log (``BaseOperator.log``), which tells what starting decided and why."""

    def info(self, event: str, *args: Any) -> Any: ...

    def warning(self, event: str, *args: Any) -> Any: ...


@dataclass(frozen=True)
class TaskTry:
    """What starting needs to know of the try of the task instance it runs in."""

    number: int
    """1 on the first try: with nothing saved, a first try has no earlier run to look up."""
    runs_since: datetime | None
    """The key's runs cannot predate this: the key lookup lists only the runs created since."""
    log: TaskLog
    started_by: StartedBy | None = None
    """The DAG and task of the try, which a platform may attribute the runs it starts to."""


def start_once(
    hook: FlowRunsHook, request: StartRequest, key: str, record: RunRecord, task_try: TaskTry, *, reattach: bool = True
) -> FlowRun:
    """The run of ``key``: the one an earlier try started while it is alive or succeeded, else a fresh one.

    ``reattach=False`` starts a fresh run on every try, whatever the earlier one did. Either way the run is
    saved in ``record``, so the next try reads it directly.
    """
    request = replace(request, task_key=key)
    if hook.platform.names_files_by_task_key:
        request = replace(request, files=keyed_files(request.files, key))
    earlier = earlier_run(hook, request.flow_id, key, record, task_try) if reattach else None
    if earlier is not None and earlier.state not in RESTART_STATES:
        task_try.log.info(
            "Re-attaching to %s run %s (%s) started by an earlier try.", earlier.platform, earlier.id, earlier.status
        )
        save_run(record, earlier)  # it may have been found by key: the next try then reads it directly
        return earlier
    if earlier is not None:
        task_try.log.warning(
            "The earlier %s run %s of this task ended %s (%s); starting a fresh run.",
            earlier.platform,
            earlier.id,
            earlier.status,
            earlier.error or "no reason given",
        )
        record.replacing(earlier)
    note_start(record, earlier)
    run = start_unambiguously(hook, request, key, task_try, earlier.id if earlier else None)
    save_run(record, run)
    return run


def start_unambiguously(
    hook: FlowRunsHook, request: StartRequest, key: str, task_try: TaskTry, earlier_id: str | None
) -> FlowRun:
    """Send the start, as started by the try's task; after one whose outcome is unknown, follow the run ``key``
    finds newer than ``earlier_id``, and send it again only when there is none."""
    request = replace(request, started_by=request.started_by or task_try.started_by)
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return hook.start_run(request)
        except (FlowRunsApiError, FlowRunsResponseError) as exc:
            if not exc.outcome_unknown:
                raise
            found = find_run(hook, request.flow_id, key, task_try.runs_since, newer_than=earlier_id)
            if found is not None:
                task_try.log.info("The platform had accepted the run despite %s: following run %s.", exc, found.id)
                return found
            if attempt == START_ATTEMPTS:
                raise
            task_try.log.warning("Starting the run failed (%s) and no run was created; starting it again.", exc)
    raise AssertionError("unreachable")  # pragma: no cover


def note_start(record: RunRecord, earlier: FlowRun | None) -> None:
    """Before a start call: this try is starting a run, after ``earlier`` (still named). A worker that dies
    before ``save_run`` leaves the note, so the next try looks for the run it may have started."""
    saved = {"id": earlier.id, "flow_id": earlier.flow_id} if earlier else {"id": None, "flow_id": None}
    record.save({**saved, "starting": True})


def save_run(record: RunRecord, run: FlowRun) -> None:
    """Remember the run the moment it is started, so a crashed worker's retry finds it without a listing."""
    record.save({"id": run.id, "flow_id": run.flow_id})


def earlier_run(hook: FlowRunsHook, flow_id: str, key: str, record: RunRecord, task_try: TaskTry) -> FlowRun | None:
    """The newest run an earlier try started for ``key``, in its current state, or None.

    The record names the run the last try saved, read directly. When a try noted a start it never saved (its
    worker died after the start call), the run it may have started is looked up by key, newer than the saved
    one: otherwise the next try would start another run next to a live one. With nothing saved, a retry
    looks the key up as well.
    """
    saved = record.saved()
    run = saved_run(hook, flow_id, saved)
    if run is not None and not saved.get("starting"):
        return run
    if run is None and task_try.number <= 1:
        return None
    newer_than = run.id if run else None
    return find_run(hook, flow_id, key, task_try.runs_since, newer_than=newer_than) or run


def saved_run(hook: FlowRunsHook, flow_id: str, saved: Mapping[str, Any]) -> FlowRun | None:
    """The run ``saved`` names, read now; None where it names none, or the platform no longer knows it (404)."""
    run_id = saved.get("id")
    if not isinstance(run_id, str):
        return None
    try:
        return hook.get_run(saved.get("flow_id") or flow_id, run_id)
    except FlowRunsApiError as exc:
        if exc.status != 404:
            raise
        hook.log.warning("Run %s saved by an earlier try is gone (HTTP 404); looking it up by task key.", run_id)
        return None


def find_run(
    hook: FlowRunsHook,
    flow_id: str | None,
    key: str,
    created_after: datetime | None = None,
    newer_than: str | None = None,
) -> FlowRun | None:
    """The newest run started for ``key``, found by the key stored on it.

    Where listing items carry no metadata (Extend's ``WorkflowRunSummary``), each candidate in the window is
    read in full, newest first, at most ``Platform.lookup_reads`` of them. ``newer_than``: stop at that run
    (an earlier try's), so only a run started after it is found. None at once where runs keep no key
    (``Platform.keeps_task_key``): listing them could not find it. A listing that stops at its bounds before
    its last page is ``FlowRunsListingError``, never None: a run it did not
    show may be running, and a second start would bill the document twice.
    """
    platform = hook.platform
    if not platform.keeps_task_key:
        return None
    reads = 0
    for listed in hook.list_runs(flow_id=flow_id, created_after=created_after):
        if listed.id == newer_than:
            return None
        run = listed
        if not platform.listing_has_metadata:
            if reads == platform.lookup_reads:
                hook.log.warning(
                    "Stopped looking for the run of task key %s after reading %d runs of flow %s.", key, reads, flow_id
                )
                return None
            reads += 1
            run = hook.get_run(flow_id, listed.id)
        if platform.task_key_of(run) == key:
            return run
    return None
