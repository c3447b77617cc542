"""Toy: one multipart call uploads the document and starts the run; runs are read by id and listed newest
first, a page at a time, behind an opaque cursor. There is no cancel.

Wire facts: a run is ``{id, flow_id, status, error, metadata, created_at, updated_at, finished_at, result}``
with ISO 8601 times; a listing page is ``{runs, next_cursor}``, ``next_cursor`` null on the last page.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.platforms.base import Api, ApiCall, FlowRun, Platform, RunQuery, RunsPage, RunState, map_status
from airflow_flowruns.platforms.start import StartRequest, UploadFile
from airflow_flowruns.platforms.values import path_segment
from toy_platform import FACTS

STATUSES: dict[str, RunState] = {
    "waiting": RunState.QUEUED,
    "working": RunState.RUNNING,
    "checking": RunState.NEEDS_REVIEW,
    "done": RunState.SUCCEEDED,
    "broken": RunState.FAILED,
}

FILE_KEY = "document"
PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


class Run(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    flow_id: str | None = None
    status: str
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    finished_at: datetime | None = None


class RunsListing(BaseModel):
    model_config = ConfigDict(extra="allow")

    runs: list[dict[str, Any]]
    next_cursor: str | None = None


class Toy(Platform, facts=FACTS):
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.api_key}"}

    def test_call(self) -> ApiCall:
        return ApiCall("list runs", "GET", "/runs", params={"limit": 1})

    def get_run_call(self, flow_id: str | None, run_id: str) -> ApiCall:
        return ApiCall("get run", "GET", f"/runs/{path_segment(run_id, 'run_id')}")

    def parse_run(self, body: Any, flow_id: str | None = None) -> FlowRun:
        run = self.parse_model(Run, body, "run")
        state = map_status(self.label, run.status, STATUSES)
        return FlowRun(
            id=run.id,
            flow_id=run.flow_id or flow_id,
            platform=self.name,
            state=state,
            status=run.status,
            error=(run.error or "Toy reported the run as failed without a reason.")
            if state is RunState.FAILED
            else None,
            metadata=run.metadata,
            created_at=run.created_at,
            ended_at=run.finished_at if state.is_final else None,
            raw=body,
        )

    def list_runs_call(self, query: RunQuery) -> ApiCall:
        """The listing filters by flow only: states and dates are filtered client-side."""
        params: dict[str, Any] = {"limit": min(query.page_size or PAGE_SIZE, MAX_PAGE_SIZE)}
        if query.flow_id:
            params["flow_id"] = query.flow_id
        return ApiCall("list runs", "GET", "/runs", params=params)

    def parse_runs_page(self, body: Any, call: ApiCall, query: RunQuery) -> RunsPage:
        page = self.parse_model(RunsListing, body, "run listing")
        runs = [self.parse_run(item) for item in page.runs]
        if page.next_cursor is None or not runs or query.is_before_window(runs[-1]):
            return RunsPage(runs, None)
        return RunsPage(runs, replace(call, params={**(call.params or {}), "cursor": page.next_cursor}))

    def start_run(self, api: Api, request: StartRequest) -> FlowRun:
        self.refuse_unsupported(request, "run_name", "file_metadata", "file_guidance", "inputs", "flow_version")
        document = request.files.get(FILE_KEY)
        if set(request.files) != {FILE_KEY} or document is None or isinstance(document, tuple):
            raise FlowRunsConfigError(
                f'A Toy run takes one file under the key {FILE_KEY!r}: files={{"{FILE_KEY}": path}}.'
            )
        call = ApiCall(
            "start run",
            "POST",
            f"/flows/{path_segment(request.flow_id, 'flow_id')}/runs",
            data={"metadata": json.dumps(request.metadata_with_task_key())},
            files=[UploadFile(FILE_KEY, document, "application/octet-stream")],
            idempotent=False,
        )
        return self.parse_run(api.call(call), request.flow_id)


PLATFORM = Toy
