"""What every platform module provides, and the normalized types the operator, sensor and trigger use.

A platform module is sans-I/O where it can be: it describes calls as ``ApiCall`` values and parses
decoded JSON into ``FlowRun``. The hook executes the calls (sync in workers, async in the
triggerer) with one retry and error policy, so nothing here knows which HTTP client runs it. Only
starting a run, which can take several dependent calls (read the flow, upload, start), is written
against the small ``Api`` protocol, and it only ever runs in a worker.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Protocol, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field

from airflow_flowruns.exceptions import FlowRunsConfigError, FlowRunsResponseError
from airflow_flowruns.platforms.batching import BatchStarts
from airflow_flowruns.platforms.facts import PlatformFacts
from airflow_flowruns.platforms.start import TASK_KEY_FIELD, StartRequest, UploadFile
from airflow_flowruns.platforms.usage import Usage

M = TypeVar("M", bound=BaseModel)


class RunState(StrEnum):
    """The provider's normalized run state; each platform maps its raw statuses onto it."""

    QUEUED = "queued"
    RUNNING = "running"
    NEEDS_REVIEW = "needs_review"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_STATES


_FINAL_STATES = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED})


class FlowRun(BaseModel):
    """One remote run, normalized. ``status`` and ``raw`` keep exactly what the platform said."""

    model_config = ConfigDict(frozen=True)

    id: str
    flow_id: str | None
    platform: str
    state: RunState
    status: str
    error: str | None = None
    url: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_ms: int | None = None
    reviewed_by: str | None = None
    """Who reviewed the run on the platform, where the platform says (Extend's ``reviewedByUser``)."""
    usage: Usage | None = None
    """What the run consumed, where its platform reports it (see ``Usage``); None where it reports nothing."""
    raw: dict[str, Any] = Field(default_factory=dict, exclude=True, repr=False)
    outputs: Any = Field(default=None, exclude=True, repr=False)
    """What a synchronous run returned (StackAI); never in ``to_xcom()``: the operator decides where it goes."""

    def to_xcom(self) -> dict[str, Any]:
        """The small, JSON-safe dict the tasks return; bulky outputs stay in ``raw``."""
        return self.model_dump(mode="json")


def map_status(platform: str, raw_status: str, mapping: Mapping[str, RunState]) -> RunState:
    """Normalize a raw status, refusing to guess at one the platform never documented."""
    try:
        return mapping[raw_status]
    except KeyError:
        known = ", ".join(sorted(mapping))
        raise FlowRunsResponseError(
            f"{platform} returned run status {raw_status!r}, which this provider does not know "
            f"(known: {known}). The platform's API may have changed: upgrade airflow-flowruns or "
            "report the status to its maintainers."
        ) from None


@dataclass(frozen=True)
class ApiCall:
    """One HTTP call, described but not performed.

    ``idempotent`` says whether repeating the call after it may have reached the platform is harmless.
    Starting a run is not: it is retried only when the platform certainly did not accept it
    (a connection that never opened, or a 429).
    """

    name: str
    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    data: Mapping[str, str] | None = None
    files: Sequence[UploadFile] = ()
    idempotent: bool = True
    timeout: float | None = None
    """Seconds for this call instead of the client's timeout, e.g. for a run that answers when it is done."""
    ids: Mapping[str, str] | None = None
    """The ids ``path`` names, by what a user calls them (``{"run id": ...}``): a 404 then says which may be
    unknown; a call naming none can only have gone to the wrong address."""


@dataclass(frozen=True)
class RunQuery:
    """Which runs to list. Each platform sends what its API can filter on and leaves the rest to
    ``matches``, applied client-side to every run it returns.

    ``created_after`` is inclusive and ``created_before`` exclusive, so consecutive data intervals
    never share or miss a run.
    """

    flow_id: str | None = None
    states: frozenset[RunState] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    page_size: int | None = None
    """Runs per request; None: the platform module's default."""
    run_id: str | None = None
    """One run, for platforms that find runs only by listing them (see ``Platform.run_lookup``)."""
    run_ids: frozenset[str] | None = None
    """Only these runs: the polls one listing answers (see ``Platform.poll_listing``). Platforms that
    support it leave the other runs of a page unparsed."""
    user_id: str | None = None
    """The platform's end-user id, where runs carry one (StackAI); filtered by the API, not by ``matches``."""

    def matches(self, run: FlowRun) -> bool:
        if self.run_id is not None and run.id != self.run_id:
            return False
        if self.run_ids is not None and run.id not in self.run_ids:
            return False
        if self.flow_id is not None and run.flow_id not in (None, self.flow_id):
            return False
        if self.states is not None and run.state not in self.states:
            return False
        created = run.created_at
        if created is None:
            return self.created_after is None and self.created_before is None
        if self.created_after is not None and created < self.created_after:
            return False
        return self.created_before is None or created < self.created_before

    def is_before_window(self, run: FlowRun) -> bool:
        """For newest-first listings: this run and every later one are too old, so paging can stop."""
        return self.created_after is not None and run.created_at is not None and run.created_at < self.created_after


@dataclass(frozen=True)
class RunsPage:
    """One page of a listing, unfiltered, and the call for the next page (None after the last)."""

    runs: list[FlowRun]
    next_call: ApiCall | None

    def __len__(self) -> int:
        return len(self.runs)


@dataclass(frozen=True)
class RunChange:
    """One item of a change feed: what a listing summary says about a run, and when the run last changed.

    A summary is not the whole run (Extend's list items carry no metadata and no failure details), so
    only its state and times are read from it; a change it cannot describe is read from the run itself.
    """

    id: str
    state: RunState
    status: str
    updated_at: datetime
    started_at: datetime | None = None


@dataclass(frozen=True)
class ChangesPage:
    """One page of a change feed, newest change first, and the call for the next page (None after the last)."""

    changes: list[RunChange]
    next_call: ApiCall | None

    def __len__(self) -> int:
        return len(self.changes)


class Api(Protocol):
    """What a platform needs to start a run: perform a call and get its decoded JSON body."""

    def call(self, call: ApiCall) -> Any: ...


@dataclass(frozen=True)
class ConnectionSettings:
    """What the hook read from the Airflow connection, in the platform's terms."""

    conn_id: str
    api_key: str = field(repr=False)
    base_url: str
    extras: Mapping[str, Any] = field(default_factory=dict)
    login: str | None = None


class Platform(BatchStarts, ABC):
    """Everything one platform does on the wire. Each is the ``api.py`` of its folder (``platforms/<name>/``),
    declared with that folder's facts: ``class TableFlow(Platform, facts=FACTS)``."""

    facts: ClassVar[PlatformFacts]
    name: ClassVar[str]
    """Connection type and the ``platform`` value in XCom, e.g. ``tableflow`` (from the facts)."""
    label: ClassVar[str]
    """Human name used in messages, e.g. ``TableFlow`` (from the facts)."""
    default_base_url: ClassVar[str]
    base_path: ClassVar[str] = ""
    """The path every call of the API lives under (TableFlow: ``/v2``), added to a host typed without it."""
    can_cancel: ClassVar[bool] = False
    keeps_task_key: ClassVar[bool] = True
    """Runs carry the task key the provider stores on them (see ``task_key_of``); False: no run can be found
    by it, and only the task's state store tells a retry which run an earlier try started."""
    listing_has_metadata: ClassVar[bool] = True
    """Listing items carry the run's metadata; False: finding a run by its task key reads each run in full."""
    lookup_reads: ClassVar[int] = 50
    """Where ``listing_has_metadata`` is False: the most runs one task key lookup reads in full."""
    synchronous: ClassVar[bool] = False
    """The start call returns when the run has finished: nothing to wait for, nothing to defer."""

    def __init_subclass__(cls, facts: PlatformFacts | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if facts is not None:
            cls.facts = facts
            cls.name, cls.label = facts.name, facts.label
            cls.default_base_url, cls.base_path = facts.default_base_url, facts.base_path

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self.check_credentials()

    def check_credentials(self) -> None:
        """Refuse a connection without what this platform authenticates with: by default an API key."""
        if not self.settings.api_key:
            raise FlowRunsConfigError(
                f"Connection {self.settings.conn_id!r} has no API key: put the {self.label} API key in its "
                "password field."
            )

    # --- HTTP -------------------------------------------------------------------------------------

    def secrets(self) -> list[str]:
        """What must never appear in a message: scrubbed from every text the server sends back."""
        return [self.settings.api_key]

    @abstractmethod
    def headers(self) -> dict[str, str]:
        """Authentication and any headers the platform requires on every call."""

    def error_detail(self, body: Any) -> str | None:
        """The API's own error text from a decoded JSON error body, when it has one.

        Understands ``{"message"}``, ``{"error"}``, ``{"detail": "..."}`` and the FastAPI-style 422
        ``{"detail": [{"loc", "msg", "type"}]}`` (Noxus, StackAI), naming where each problem is.
        """
        detail = body.get("detail") if isinstance(body, Mapping) else None
        if isinstance(detail, list):
            return "; ".join(
                f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg')}"
                for item in detail
                if isinstance(item, Mapping)
            )
        if isinstance(body, Mapping):
            for key in ("message", "detail", "error"):
                value = body.get(key)
                if isinstance(value, str) and value:
                    return value
        return None

    def is_retryable(self, status: int, body: Any) -> bool:
        return status == 429 or status >= 500

    # --- runs ---------------------------------------------------------------------------------------

    def auth(self) -> httpx.Auth | None:
        """An httpx auth flow for platforms whose credentials are more than a static header (OAuth)."""
        return None

    @abstractmethod
    def get_run_call(self, flow_id: str | None, run_id: str) -> ApiCall | None:
        """The call that reads one run, or None where runs can only be found by listing them."""

    def run_lookup(self, flow_id: str | None, run_id: str) -> RunQuery:
        """How to find one run in the listing, for platforms whose ``get_run_call`` is None."""
        return RunQuery(flow_id=flow_id, run_id=run_id)

    @classmethod
    def poll_listing(cls, flow_id: str | None) -> RunQuery | None:
        """The listing that answers the polls of many runs of one flow with one request per page, or None.

        Only where a listing item is the whole run (the same object one read returns) and the listing is
        newest first, so the runs being waited on are on its first pages, or where the listing is the only
        way to read a run at all (StackAI). None: every poll reads its run.
        """
        return None

    @classmethod
    def change_feed_call(cls) -> ApiCall | None:
        """The first page of the connection's runs by last change, newest first, largest pages; or None.

        Where it exists the triggerer answers the polls of every run on the connection from it (see
        ``hooks/feed.py``), reading a run on its own only when its summary shows a change it cannot describe.
        """
        return None

    def parse_changes(self, body: Any, call: ApiCall) -> ChangesPage:
        """One page of ``change_feed_call``'s listing; the next call carries the page's cursor with that same query."""
        raise NotImplementedError(f"{self.label} has no change feed")

    @abstractmethod
    def parse_run(self, body: Any, flow_id: str | None = None) -> FlowRun: ...

    def cancel_call(self, flow_id: str | None, run_id: str) -> ApiCall | None:
        """The call that cancels a run, or None where the platform has no way to cancel."""
        return None

    @abstractmethod
    def list_runs_call(self, query: RunQuery) -> ApiCall:
        """The call for the first page of runs matching as much of ``query`` as the API can filter."""

    @abstractmethod
    def parse_runs_page(self, body: Any, call: ApiCall, query: RunQuery) -> RunsPage:
        """The runs on one page and the call for the next, from the page's body and the call that got it."""

    @abstractmethod
    def start_run(self, api: Api, request: StartRequest) -> FlowRun:
        """Validate the request against what the platform says it accepts, then start one run.

        Everything that can be checked before the first upload is checked first, so a bad input
        never leaves a half-started run behind.
        """

    def task_key_of(self, run: FlowRun) -> str | None:
        """The task key this provider stored on a run when it started it (see ``StartRequest.task_key``).

        Platforms that keep run metadata store it there under ``TASK_KEY_FIELD``; others override. A batch
        document's run whose listing item has no metadata names its key in its file names.
        """
        value = run.metadata.get(TASK_KEY_FIELD)
        return value if isinstance(value, str) else self.key_in_file_names(run)

    @property
    def names_files_by_task_key(self) -> bool:
        """Runs keep no metadata but do keep their files' names, so a task's run carries its task key in them
        (``{task key}~{name}``, read back by ``task_key_of``): the key ``airflow flowruns orphans`` tells a task's
        runs by. Derived from the two facts, so it cannot name files a platform would not read back."""
        return self.keyed_file_names and not self.takes_metadata

    @abstractmethod
    def test_call(self) -> ApiCall:
        """One cheap authenticated call, for ``test_connection``."""

    # --- helpers for subclasses -------------------------------------------------------------------

    def refuse_unsupported(self, request: StartRequest, *names: str) -> None:
        """Fail before any upload when the task sets an argument this platform has no place for."""
        given = [name for name in names if getattr(request, name)]
        if given:
            raise FlowRunsConfigError(
                f"{self.label} runs take no {', '.join(given)}; remove {'it' if len(given) == 1 else 'them'} "
                "from the task."
            )

    def parse_model(self, model: type[M], body: Any, what: str) -> M:
        try:
            return model.model_validate(body)
        except ValueError as exc:
            raise FlowRunsResponseError(
                f"{self.label} returned a {what} this provider cannot read: {_first_error(exc)}. "
                "Check that the connection's host points at the platform's API."
            ) from None


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        loc = ".".join(str(part) for part in first.get("loc", ()))
        return f"{loc}: {first.get('msg')}" if loc else str(first.get("msg"))
    return str(exc)
