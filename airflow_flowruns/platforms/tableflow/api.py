"""TableFlow v2: one multipart call starts a run; runs are polled by id; there is no cancel.

Unconfirmed wire facts, decided here and nowhere else (see the README's TableFlow section):

* ``created_at``/``updated_at``: read as ISO 8601 or unix seconds, whichever arrives.
* A single path for a file field is sent as a part named ``key``; a list as ``key_1``, ``key_2``, ...
* There is no documented dashboard link, so the run's URL is the API resource of the run
  (``{base_url}/flows/runs/{run_id}``); the connection extra ``run_url_template`` overrides it.
* File types are checked by file extension, with ``image`` meaning the extensions in ``_TYPE_EXTENSIONS``.
* The listing's items are whole Run objects, as a read returns them, so ``poll_listing`` lets one
  listing page answer the triggerer's polls of many runs.
* Runs are listed with the paged workspace listing ``GET /flows/runs`` (filter ``flow_id``), which keeps
  memory bounded; the documented per-flow listing ``GET /flows/{flow_id}/runs`` answers every run of the
  flow at once as a bare array, and that shape is read too (one page, no next).
* The run object (``tableflow-run-flow.txt``) reports no usage, no credits, pages or tokens: a run's
  ``usage`` is None.
"""

from __future__ import annotations

import json
import mimetypes
from dataclasses import replace
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.platforms.base import (
    Api,
    ApiCall,
    ConnectionSettings,
    FlowRun,
    Platform,
    RunQuery,
    RunsPage,
    RunState,
    map_status,
)
from airflow_flowruns.platforms.start import FilePath, StartRequest, UploadFile
from airflow_flowruns.platforms.tableflow import FACTS
from airflow_flowruns.platforms.values import path_segment

STATUSES: dict[str, RunState] = {
    "processing": RunState.RUNNING,
    "review": RunState.NEEDS_REVIEW,
    "completed": RunState.SUCCEEDED,
    "failed": RunState.FAILED,
}

_TYPE_EXTENSIONS: dict[str, frozenset[str]] = {
    "pdf": frozenset({".pdf"}),
    "image": frozenset({".png", ".jpg", ".jpeg", ".gif", ".tif", ".tiff", ".bmp", ".webp", ".heic"}),
}

DEFAULT_RUN_URL_TEMPLATE = "{base_url}/flows/runs/{run_id}"


class FileField(BaseModel):
    model_config = ConfigDict(extra="allow")

    key: str
    name: str | None = None
    required: bool = False
    file_types: list[str] = Field(default_factory=list)
    max_file_size: int | None = None

    def accepts(self, path: FilePath) -> bool:
        if not self.file_types:
            return True
        suffix = path.suffix.lower()
        return any(suffix in _TYPE_EXTENSIONS.get(kind, {f".{kind}"}) for kind in self.file_types)


class FileInputConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    file_fields: list[FileField] = Field(default_factory=list)


class Flow(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    name: str | None = None
    active: bool = True
    file_input_config: FileInputConfig = Field(default_factory=FileInputConfig)


class StatusEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: str
    time: int | None = None
    message: str | None = None


class Run(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    flow_id: str | None = None
    status: str
    status_history: list[StatusEntry] = Field(default_factory=list)
    error: str | None = None
    metadata: dict[str, Any] | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration: int | None = None
    created_at: datetime | None = None


class Pagination(BaseModel):
    model_config = ConfigDict(extra="allow")

    next_offset: int | None = None


class RunsListing(BaseModel):
    model_config = ConfigDict(extra="allow")

    flow_runs: list[dict[str, Any]]
    pagination: Pagination


PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class TableFlow(Platform, facts=FACTS):
    largest_page = MAX_PAGE_SIZE

    def __init__(self, settings: ConnectionSettings) -> None:
        super().__init__(settings)
        self._flows: dict[str, Flow] = {}

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.api_key}"}

    def test_call(self) -> ApiCall:
        return ApiCall("list flows", "GET", "/flows")

    def get_run_call(self, flow_id: str | None, run_id: str) -> ApiCall:
        return ApiCall("get run", "GET", f"/flows/runs/{path_segment(run_id, 'run_id')}", ids={"run id": run_id})

    def parse_run(self, body: Any, flow_id: str | None = None) -> FlowRun:
        run = self.parse_model(Run, body, "run")
        state = map_status(self.label, run.status, STATUSES)
        template = self.settings.extras.get("run_url_template") or DEFAULT_RUN_URL_TEMPLATE
        return FlowRun(
            id=run.id,
            flow_id=run.flow_id or flow_id,
            platform=self.name,
            state=state,
            status=run.status,
            error=_failure_text(run) if state is RunState.FAILED else None,
            url=template.format(base_url=self.settings.base_url, run_id=run.id, flow_id=run.flow_id),
            metadata=run.metadata or {},
            created_at=run.created_at,
            started_at=run.start_time,
            ended_at=run.end_time,
            duration_ms=run.duration if state.is_final else None,
            raw=body,
        )

    def list_runs_call(self, query: RunQuery) -> ApiCall:
        """``GET /flows/runs`` filters by flow and by one status; dates are filtered client-side."""
        params: dict[str, Any] = {"limit": min(query.page_size or PAGE_SIZE, MAX_PAGE_SIZE), "offset": 0}
        if query.flow_id:
            params["flow_id"] = query.flow_id
        raw = [status for status, state in STATUSES.items() if query.states and state in query.states]
        if len(raw) == 1:
            params["status"] = raw[0]
        return ApiCall("list runs", "GET", "/flows/runs", params=params)

    @classmethod
    def poll_listing(cls, flow_id: str | None) -> RunQuery | None:
        """Listing items are whole Run objects, newest first (the flow's, or the workspace's without a
        flow id): one page answers up to 1,000 polls."""
        return RunQuery(flow_id=flow_id, page_size=MAX_PAGE_SIZE)

    def parse_runs_page(self, body: Any, call: ApiCall, query: RunQuery) -> RunsPage:
        if isinstance(body, list):
            body = {"flow_runs": body, "pagination": {"next_offset": None}}
        page = self.parse_model(RunsListing, body, "run listing")
        items = page.flow_runs
        wanted = query.run_ids
        runs = [self.parse_run(item) for item in items if wanted is None or item.get("id") in wanted]
        next_offset = page.pagination.next_offset
        if next_offset is None or not items or (runs and query.is_before_window(runs[-1])):
            return RunsPage(runs, None)
        return RunsPage(runs, replace(call, params={**(call.params or {}), "offset": next_offset}))

    def start_run(self, api: Api, request: StartRequest) -> FlowRun:
        self.refuse_unsupported(request, "inputs", "flow_version")
        flow = self._active_flow(api, request.flow_id)
        _check_files(flow, request)
        data: dict[str, str] = {}
        if request.run_name:
            data["name"] = request.run_name
        metadata = request.metadata_with_task_key()
        if metadata:
            data["metadata"] = json.dumps(metadata)
        for key, value in request.file_metadata.items():
            data[f"{key}_metadata"] = json.dumps(value)
        for key, text in request.file_guidance.items():
            data[f"{key}_guidance"] = text
        call = ApiCall(
            "start run",
            "POST",
            f"/flows/{path_segment(request.flow_id, 'flow_id')}/run",
            data=data,
            files=_upload_parts(request),
            idempotent=False,
            ids={"flow id": request.flow_id},
        )
        return self.parse_run(api.call(call), request.flow_id)

    def default_file_field(self, api: Api, flow_id: str) -> str | None:
        """A flow with one file field takes a batch's documents there."""
        fields = self._active_flow(api, flow_id).file_input_config.file_fields
        return fields[0].key if len(fields) == 1 else None

    def _active_flow(self, api: Api, flow_id: str) -> Flow:
        """The active flow ``flow_id``, read once per connection object: a batch of thousands of documents lists
        the flows once, not once per start (each start still fails on its own if the flow goes away)."""
        if flow_id in self._flows:
            return self._flows[flow_id]
        flows = [Flow.model_validate(item) for item in api.call(ApiCall("list flows", "GET", "/flows"))]
        flow = next((f for f in flows if f.id == flow_id and f.active), None)
        if flow is None:
            active = ", ".join(f.id for f in flows if f.active) or "none"
            raise FlowRunsConfigError(
                f"TableFlow has no active flow {flow_id!r} for this API key (active flows: {active}). "
                "Check flow_id and the connection's key."
            )
        self._flows[flow_id] = flow
        return flow


def _failure_text(run: Run) -> str:
    last = run.status_history[-1].message if run.status_history else None
    parts = [text for text in (run.error, last) if text]
    if len(parts) == 2 and parts[0] == parts[1]:
        parts.pop()
    return " / ".join(parts) or "TableFlow reported the run as failed without a reason."


def _upload_parts(request: StartRequest) -> list[UploadFile]:
    named: list[tuple[str, FilePath]] = []
    for key, value in request.files.items():
        if isinstance(value, tuple):
            named.extend((f"{key}_{i}", path) for i, path in enumerate(value, start=1))
        else:
            named.append((key, value))
    return [
        UploadFile(name, path, mimetypes.guess_type(path.name)[0] or "application/octet-stream") for name, path in named
    ]


def _check_files(flow: Flow, request: StartRequest) -> None:
    fields = {f.key: f for f in flow.file_input_config.file_fields}
    known = ", ".join(fields) or "none"
    for what, keys in (
        ("files", request.files),
        ("file_metadata", request.file_metadata),
        ("file_guidance", request.file_guidance),
    ):
        unknown = sorted(set(keys) - set(fields))
        if unknown:
            raise FlowRunsConfigError(
                f"{what} names {', '.join(map(repr, unknown))}, which flow {flow.id!r} does not have as a "
                f"file field (its file fields: {known}). Fix the keys of {what}."
            )
    missing = [key for key, f in fields.items() if f.required and not request.files.get(key)]
    if missing:
        raise FlowRunsConfigError(
            f"Flow {flow.id!r} requires file field(s) {', '.join(map(repr, missing))}; add them to files."
        )
    for key, path in request.iter_files():
        spec = fields[key]
        if not spec.accepts(path):
            raise FlowRunsConfigError(
                f"File {str(path)!r} for field {key!r} is not of a type flow {flow.id!r} accepts "
                f"({', '.join(spec.file_types)}). Convert it or send it to another field."
            )
        size = path.stat().st_size
        if spec.max_file_size is not None and size > spec.max_file_size:
            raise FlowRunsConfigError(
                f"File {str(path)!r} for field {key!r} is {size} bytes; flow {flow.id!r} accepts at most "
                f"{spec.max_file_size} bytes there. Split or compress it."
            )


PLATFORM = TableFlow
