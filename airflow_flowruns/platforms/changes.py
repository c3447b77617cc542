"""Which runs reached a watched state since a moment: what the asset watcher asks each platform every poll.

Each platform answers with the cheapest listing it offers, described by its folder's ``changes.py`` as a
``ChangeSource`` (the listing's order decides where reading can stop):

* ``updated``: newest change first (Extend): reading stops at the first run not updated since the window
  opened, so a poll reads only what changed;
* ``created``: newest first by creation (TableFlow): read until runs are older than the window minus
  ``lookback`` (how long a run may take from creation to the watched state and still be announced);
* ``filtered``: the API filters by creation date (StackAI): one filtered listing from the window minus
  ``lookback``;
* ``none``: no order and no filter (Noxus): every poll is a full scan of the flow's runs, filtered here.

A run's *change time* is when it entered its current state: its end time for a final state; for a state that
is not final, the platform's last status change where it reports one, else the creation time for a queued
run. States whose entry time a platform does not report cannot be watched there and are refused at the
first poll.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from airflow_flowruns.client.listing import LISTING_BOUNDS, PageWalk, WalkBounds, run_pages
from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.platforms.base import FlowRun, RunQuery, RunsPage, RunState

if TYPE_CHECKING:
    from airflow_flowruns.client import AsyncFlowRunsClient

_FINAL = frozenset(state for state in RunState if state.is_final)
NOT_FINAL = frozenset(RunState) - _FINAL
"""Every state a run can be in before it settles."""
_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _raw_time(run: FlowRun, field: str) -> datetime | None:
    value = run.raw.get(field) if isinstance(run.raw, dict) else None
    if value is None:
        return None
    try:
        return _aware(_DATETIME.validate_python(value))
    except ValidationError:
        return None


def _ended(run: FlowRun) -> datetime | None:
    """When a final run ended: its end time, or its creation plus its duration where only that is reported."""
    if run.ended_at is not None:
        return _aware(run.ended_at)
    if run.created_at is not None and run.duration_ms is not None:
        return _aware(run.created_at + timedelta(milliseconds=run.duration_ms))
    return None


def updated_at(field: str) -> Callable[[FlowRun], datetime | None]:
    """For platforms that stamp a run's last status change: read it from the run's ``field``."""
    return lambda run: _raw_time(run, field)


def queued_since_creation(run: FlowRun) -> datetime | None:
    """For platforms that time a run only by its creation (and end): a queued run entered its state then."""
    return _aware(run.created_at) if run.state is RunState.QUEUED else None


@dataclass(frozen=True)
class ChangeSource:
    """How one platform finds the runs that changed since a moment, and when each entered its state."""

    status_time: Callable[[FlowRun], datetime | None]
    """When a run entered a state that is not final, or None where the platform does not say."""
    timestamped_states: frozenset[RunState]
    """The states besides the final ones whose entry time ``status_time`` knows."""
    order: str
    """``updated`` (newest change first: stop at the window), ``created`` (newest first: stop at the window
    minus lookback), ``filtered`` (the API filters by creation date) or ``none`` (a full scan)."""
    task_key_needs_run: bool = False
    """Listing items lack the run's metadata: read the run for the task key of an announced run."""
    sort_params: Mapping[str, str] = field(default_factory=dict)
    """Query parameters that make the platform's listing sort by last change (order ``updated``)."""

    def changed_at(self, run: FlowRun) -> datetime | None:
        at = _ended(run) if run.state.is_final else self.status_time(run)
        return at if at is not None or not run.state.is_final else _aware(run.created_at)

    def check_states(self, platform: str, states: Collection[RunState]) -> None:
        untimed = sorted(set(states) - _FINAL - self.timestamped_states)
        if untimed:
            from airflow_flowruns.platforms import facts_of

            label = facts_of(platform).label
            raise FlowRunsConfigError(
                f"{label} does not say when a run entered {', '.join(untimed)}, so a watcher cannot tell when "
                f"it happened: watch {', '.join(sorted(_FINAL | self.timestamped_states))} instead."
            )

    def runs_since(
        self,
        client: AsyncFlowRunsClient,
        flow_id: str | None,
        states: frozenset[RunState],
        since: datetime,
        lookback: timedelta,
        *,
        bounds: WalkBounds = LISTING_BOUNDS,
    ) -> RunScan:
        """Every run in ``states`` that may have entered its state at or after ``since`` (and some that did not),
        read at most as far as ``bounds`` allow."""
        platform = client.platform
        created_after = since - lookback if self.order == "filtered" else None
        query = RunQuery(flow_id=flow_id, states=states, created_after=created_after)
        first = platform.list_runs_call(query)
        if self.sort_params:
            first = replace(first, params={**(first.params or {}), **self.sort_params})
        walk = run_pages(platform, query, first, bounds=bounds)
        return RunScan(client, walk, lambda run: self._before_window(run, since, lookback), query.matches)

    def _before_window(self, run: FlowRun, since: datetime, lookback: timedelta) -> bool:
        """For ordered listings: this run, and so every later one, changed before the window."""
        if self.order == "updated":
            updated = self.status_time(run)
            return updated is not None and updated < since
        if self.order == "created":
            created = _aware(run.created_at)
            return created is not None and created < since - lookback
        return False


class RunScan:
    """One read of a platform's listing for a watcher's poll: iterating it gives the runs, in the listing's
    order, up to the first one before the window; ``cut_short`` then says whether the walk stopped at
    its bounds instead (a listing that never ends, or one longer than a poll reads)."""

    def __init__(
        self,
        client: AsyncFlowRunsClient,
        walk: PageWalk[RunsPage],
        before_window: Callable[[FlowRun], bool],
        matches: Callable[[FlowRun], bool],
    ) -> None:
        self._client = client
        self._walk = walk
        self._before_window = before_window
        self._matches = matches

    @property
    def cut_short(self) -> str | None:
        """Why the walk ended before the window's last run (None: it read the whole window)."""
        return self._walk.cut_short

    def __aiter__(self) -> AsyncIterator[FlowRun]:
        return self._runs()

    async def _runs(self) -> AsyncIterator[FlowRun]:
        async for page in self._client.walk_pages(self._walk):
            for run in page.runs:
                if self._before_window(run):
                    return
                if self._matches(run):
                    yield run


def run_times(run: FlowRun) -> dict[str, Any]:
    """The run's creation and end times for an event payload, as ISO 8601 strings (None when unknown)."""
    ended = _ended(run) if run.state.is_final else None
    created = _aware(run.created_at)
    return {
        "created_at": created.isoformat() if created else None,
        "ended_at": ended.isoformat() if ended else None,
    }
