"""Export the runs created in a DAG run's data interval as JSON Lines, one object per interval."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Sequence
from typing import IO, TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator, ObjectStoragePath

from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.hooks.flow_run import run_query
from airflow_flowruns.operators._connection import FlowRunsConnectionMixin
from airflow_flowruns.platforms.base import FlowRun, RunState
from airflow_flowruns.review.register import recorded_review

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

LOCAL_PROTOCOLS = frozenset({"file", "local"})


class FlowRunsExportOperator(FlowRunsConnectionMixin, BaseOperator):
    """Write every run created in ``[data_interval_start, data_interval_end)`` to ``destination``.

    Backfill-safe: the runs are read from the platform for exactly the DAG run's interval (start
    inclusive, end exclusive, so consecutive intervals neither share nor miss a run) and written to a
    temporary object next to ``destination``, which then replaces it whole. A re-run or a backfill
    rewrites its interval's object and never appends, so no row is duplicated or lost. Runs stream from
    the listing to the file page by page: memory does not grow with the number of runs. A run the listing
    gives twice (an offset listing shifts when runs are created while it is read) is written once, and a
    listing cut short at its bounds (``client.listing.LISTING_BOUNDS``) fails the task and leaves the
    previous object as it was: a part of the interval is never published as the whole.

    Each line is the run as the flow-run tasks return it (``FlowRun.to_xcom()``), in the platform's
    listing order (newest first where the platform sorts that way), plus ``review``: who decided the run's
    review and where. A decision taken in Airflow (``on_review="airflow"``) is read from the register the
    reviewing task wrote (``review.register``, one Airflow Variable read per finished or in-review run); a
    review in the vendor's app, from the run's ``reviewed_by``; None for a run nobody reviewed.

    An interval with no runs writes an empty object, so downstream readers can tell "no runs" from "not
    exported yet". The DAG needs a data-interval timetable (``CronDataIntervalTimetable``, a ``timedelta``);
    with one, a manual run at a logical date exports the last complete interval before it.

    :param destination: templated ``ObjectStoragePath`` or URI (``file://``, ``s3://``, ...); template the
        interval into it, e.g. ``file:///exports/{{ data_interval_start | ds }}.jsonl``.
    :param flow_id: only runs of this flow (all flows when None).
    :param states: only runs in these normalized states (e.g. ``["succeeded", "failed"]``).
    :param page_size: runs per listing request (the platform's default when None).
    :param flowruns_conn_id: the platform's connection; without one, the default connection, as for
        ``FlowRunOperator``.
    :param airflow_reviews: read each run's review decided in Airflow into ``review``; False skips those reads
        (then ``review`` says only what the platform recorded).
    """

    template_fields: Sequence[str] = ("flowruns_conn_id", "flow_id", "states", "destination")

    def __init__(
        self,
        *,
        destination: str | ObjectStoragePath,
        flow_id: str | None = None,
        states: Iterable[str] | None = None,
        flowruns_conn_id: str | None = None,
        page_size: int | None = None,
        airflow_reviews: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.destination = destination
        self.flow_id = flow_id
        self.states = states
        self.flowruns_conn_id = flowruns_conn_id
        self.page_size = page_size
        self.airflow_reviews = airflow_reviews

    def execute(self, context: Context) -> dict[str, Any]:
        start, end = context.get("data_interval_start"), context.get("data_interval_end")
        if start is None or end is None or start >= end:
            raise FlowRunsConfigError(
                f"The export needs a DAG run with a data interval, and this one has [{start}, {end}). Schedule "
                "the DAG with a data-interval timetable, e.g. CronDataIntervalTimetable('@daily', timezone='UTC') "
                "(Airflow 3's plain cron schedules give runs an empty interval)."
            )
        query = run_query(self.flow_id, self.states, start, end, self.page_size)
        if not str(self.destination).strip():
            raise FlowRunsConfigError("destination is empty; check that its template renders a path or URI.")
        target = ObjectStoragePath(self.destination)
        hook = self.hook
        partial = target.parent / f".{target.name}.{uuid.uuid4().hex}.partial"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with partial.open("w") as out:
                rows, repeated = _write_once(hook.client.iter_runs(query), out, self.airflow_reviews)
            _replace(partial, target)
        finally:
            if partial.exists():
                partial.unlink()
        if repeated:
            self.log.warning("The listing gave %d run(s) a second time; each was written once.", repeated)
        self.log.info("Exported %d run(s) created in [%s, %s) to %s.", rows, start, end, target)
        return {"path": str(target), "rows": rows}


def _write_once(runs: Iterable[FlowRun], out: IO[str], airflow_reviews: bool) -> tuple[int, int]:
    """Write each run of ``runs`` once, as a JSON line; the rows written, and the runs given again and skipped.

    The ids written are held for the whole listing, which is no more runs than its walk reads at most
    (``WalkBounds.items``): the listing ends with an error there.
    """
    written: set[str] = set()
    given = 0
    for run in runs:
        given += 1
        if run.id not in written:
            written.add(run.id)
            out.write(json.dumps(export_row(run, airflow_reviews), sort_keys=True) + "\n")
    return len(written), given - len(written)


def export_row(run: FlowRun, airflow_reviews: bool) -> dict[str, Any]:
    """The run's line: its XCom dict and who reviewed it, in Airflow (from the register) or in the vendor's app.

    Runs still queued or running are not looked up: Airflow asks for a review only of a run in review or one
    that succeeded, so a run that was never either has no decision to read."""
    review = None
    if airflow_reviews and (run.state.is_final or run.state is RunState.NEEDS_REVIEW):
        review = recorded_review(run.platform, run.id)
    if review is None and run.reviewed_by:
        review = {"where": run.platform, "decision": run.state.value, "by": run.reviewed_by, "at": None, "task": None}
    return {**run.to_xcom(), "review": review}


def _replace(source: ObjectStoragePath, target: ObjectStoragePath) -> None:
    """Atomic on local disks (a rename); on object stores the best they offer, one move of a whole object."""
    if source.protocol in LOCAL_PROTOCOLS:
        os.replace(source.path, target.path)
    else:
        source.fs.mv(source.path, target.path)
