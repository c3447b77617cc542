"""Extend (API version 2026-02-09): upload a file, then start a workflow run on it; runs can be cancelled.

Unconfirmed wire facts, decided here and nowhere else (see the README's Extend section):

* A run takes one file, ``files={"file": path}``, or a package of 2 to 50 files processed together as one
  run, ``files={"file": [a, b, ...]}`` (sent as ``package``, the SDK's ``WorkflowRunPackageParams``);
  independent files mean more runs, so the operator is mapped over them (``.expand(files=...)``).
* The 10 KB metadata limit is measured on the UTF-8 JSON the provider sends, task key included.
* Responses are read in the 2026-02-09 unwrapped form and in the older ``{"success", "workflowRun"}`` /
  ``workflowRuns`` wrapped forms, whose dashboard link is named ``url``.
* Listing sorts by ``createdAt`` descending so paging can stop once past a date window.
* List items are ``WorkflowRunSummary`` objects (extend-ai SDK): no ``metadata``, ``failureReason``,
  ``failureMessage``, ``reviewed`` or ``stepRuns``. A run parsed from one has empty metadata and, when
  ``FAILED``, no error text (a rejection note it has); whatever needs them reads the full run
  (``listing_has_metadata``). A full ``WorkflowRun`` has no ``createdAt``: ``initialRunAt`` is used.
* The change feed (``change_feed_call``) lists the connection's runs by ``updatedAt`` descending,
  ``CHANGES_PAGE_SIZE`` a page: one feed per connection rather than per workflow, since one scan then
  covers every workflow the triggerer waits on. ``updatedAt`` moves whenever the status does, and a cursor
  is only ever sent with the query that returned it. List items are read only for the fields of the SDK's
  ``WorkflowRunSummary`` that the feed needs (``id``, ``status``, ``updatedAt``, ``startTime``); a page of
  more items than ``maxPageSize`` asked for is refused unread.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from airflow_flowruns.exceptions import FlowRunsConfigError, FlowRunsResponseError
from airflow_flowruns.platforms.base import (
    Api,
    ApiCall,
    ChangesPage,
    FlowRun,
    Platform,
    RunChange,
    RunQuery,
    RunsPage,
    RunState,
    map_status,
)
from airflow_flowruns.platforms.batching import BatchDocument
from airflow_flowruns.platforms.extend import FACTS
from airflow_flowruns.platforms.extend.usage import FileSummary, RunUsage, run_usage, with_usage_tags
from airflow_flowruns.platforms.start import FilePath, StartedBy, StartRequest, UploadFile
from airflow_flowruns.platforms.values import path_segment

STATUSES: dict[str, RunState] = {
    "PENDING": RunState.QUEUED,
    "PROCESSING": RunState.RUNNING,
    "CANCELLING": RunState.RUNNING,
    "NEEDS_REVIEW": RunState.NEEDS_REVIEW,
    "PROCESSED": RunState.SUCCEEDED,
    "FAILED": RunState.FAILED,
    "REJECTED": RunState.FAILED,
    "CANCELLED": RunState.CANCELLED,
}

API_VERSION = "2026-02-09"
FILE_KEY = "file"
METADATA_LIMIT_BYTES = 10 * 1024
PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_INPUTS_PER_CALL = 1000
"""``create_batch`` (extend_ai/workflow_runs/client.py): "at least 1 input and at most 1000 inputs"."""
CHANGES_PAGE_SIZE = 500
"""The change feed's page. A page of 500 summaries (about 500 KiB) decodes and parses in a few milliseconds,
a quarter of what 1,000 take, and a scan in steady state sees far fewer changes than either, so it still
costs one request; only a first scan of thousands of runs changed together pages more."""
PACKAGE_FILES = (2, 50)
"""How many files one ``package`` run takes (the SDK's ``WorkflowRunPackageParams``)."""
RETRYABLE_CODES = frozenset({"RATE_LIMIT_EXCEEDED", "INTERNAL_ERROR"})


class WorkflowRun(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    status: str
    workflow: dict[str, Any] | None = None
    dashboardUrl: str | None = None
    url: str | None = None
    metadata: dict[str, Any] | None = None
    failureReason: str | None = None
    failureMessage: str | None = None
    rejectionNote: str | None = None
    reviewedByUser: str | None = None
    createdAt: datetime | None = None
    initialRunAt: datetime | None = None
    startTime: datetime | None = None
    endTime: datetime | None = None
    files: list[FileSummary] | None = None
    usage: RunUsage | None = None

    @property
    def is_summary(self) -> bool:
        """A list item (``WorkflowRunSummary``): only it has ``createdAt``; a full run has ``stepRuns``."""
        return self.createdAt is not None and "stepRuns" not in (self.model_extra or {})


class WorkflowRunSummary(BaseModel):
    """A list item, as extend-ai's ``WorkflowRunSummary`` models it: no metadata, no failure details."""

    model_config = ConfigDict(extra="ignore")

    id: str
    status: str
    updatedAt: datetime
    startTime: datetime | None = None


class RunsListing(BaseModel):
    model_config = ConfigDict(extra="allow")

    data: list[dict[str, Any]] = Field(default_factory=list)
    nextPageToken: str | None = None


class Extend(Platform, facts=FACTS):
    can_cancel = True
    listing_has_metadata = False
    """List items are ``WorkflowRunSummary`` objects: no metadata, no failure reason (extend-ai SDK)."""
    keyed_file_names = True
    """A summary's ``files`` carry each file's ``name``: a batch names its documents' files by run key."""
    largest_page = MAX_PAGE_SIZE
    batch_inputs = MAX_INPUTS_PER_CALL
    """Documents go through ``POST /workflow_runs/batch`` (see ``batch.py``), which Extend recommends for bulk runs."""
    takes_file_urls = True

    def headers(self) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self.settings.api_key}",
            "x-extend-api-version": str(self.settings.extras.get("api_version") or API_VERSION),
        }
        if self.settings.extras.get("workspace_id"):
            headers["x-extend-workspace-id"] = str(self.settings.extras["workspace_id"])
        return headers

    def error_detail(self, body: Any) -> str | None:
        if isinstance(body, dict) and body.get("code") and body.get("message"):
            return f"{body['code']}: {body['message']}"
        return super().error_detail(body)

    def is_retryable(self, status: int, body: Any) -> bool:
        """The error body says whether a retry can help; trust it over the status code when present."""
        if isinstance(body, dict):
            if isinstance(retryable := body.get("retryable"), bool):
                return retryable
            if body.get("code") in RETRYABLE_CODES:
                return True
        return super().is_retryable(status, body)

    def test_call(self) -> ApiCall:
        return ApiCall("list runs", "GET", "/workflow_runs", params={"maxPageSize": 1})

    def get_run_call(self, flow_id: str | None, run_id: str) -> ApiCall:
        return ApiCall("get run", "GET", f"/workflow_runs/{path_segment(run_id, 'run_id')}", ids={"run id": run_id})

    def cancel_call(self, flow_id: str | None, run_id: str) -> ApiCall:
        path = f"/workflow_runs/{path_segment(run_id, 'run_id')}/cancel"
        return ApiCall("cancel run", "POST", path, ids={"run id": run_id})

    def parse_run(self, body: Any, flow_id: str | None = None) -> FlowRun:
        if isinstance(body, dict) and isinstance(body.get("workflowRun"), dict):
            body = body["workflowRun"]
        run = self.parse_model(WorkflowRun, body, "workflow run")
        state = map_status(self.label, run.status, STATUSES)
        ended = run.endTime if state.is_final else None
        return FlowRun(
            id=run.id,
            flow_id=(run.workflow or {}).get("id") or flow_id,
            platform=self.name,
            state=state,
            status=run.status,
            error=_failure_text(run) if state is RunState.FAILED else None,
            url=run.dashboardUrl or run.url,
            metadata=run.metadata or {},
            created_at=run.createdAt or run.initialRunAt,
            started_at=run.startTime,
            ended_at=ended,
            duration_ms=int((ended - run.startTime).total_seconds() * 1000) if ended and run.startTime else None,
            reviewed_by=run.reviewedByUser,
            usage=run_usage(run.usage, run.files),
            raw=body,
        )

    def list_runs_call(self, query: RunQuery) -> ApiCall:
        """``GET /workflow_runs`` filters by workflow and one status; dates are filtered client-side."""
        params: dict[str, Any] = {
            "sortBy": "createdAt",
            "sortDir": "desc",
            "maxPageSize": min(query.page_size or PAGE_SIZE, MAX_PAGE_SIZE),
        }
        if query.flow_id:
            params["workflowId"] = query.flow_id
        raw = [status for status, state in STATUSES.items() if query.states and state in query.states]
        if len(raw) == 1:
            params["status"] = raw[0]
        return ApiCall("list runs", "GET", "/workflow_runs", params=params)

    def parse_runs_page(self, body: Any, call: ApiCall, query: RunQuery) -> RunsPage:
        if isinstance(body, dict) and "workflowRuns" in body:
            body = {"data": body["workflowRuns"], "nextPageToken": body.get("nextPageToken")}
        page = self.parse_model(RunsListing, body, "run listing")
        runs = [self.parse_run(item) for item in page.data]
        if not page.nextPageToken or not runs or query.is_before_window(runs[-1]):
            return RunsPage(runs, None)
        return RunsPage(runs, replace(call, params={**(call.params or {}), "nextPageToken": page.nextPageToken}))

    @classmethod
    def change_feed_call(cls) -> ApiCall:
        params = {"sortBy": "updatedAt", "sortDir": "desc", "maxPageSize": CHANGES_PAGE_SIZE}
        return ApiCall("list changed runs", "GET", "/workflow_runs", params=params)

    def parse_changes(self, body: Any, call: ApiCall) -> ChangesPage:
        """A page of the feed; one of more runs than the call asked for is refused before any is parsed."""
        if isinstance(body, dict) and "workflowRuns" in body:
            body = {"data": body["workflowRuns"], "nextPageToken": body.get("nextPageToken")}
        asked = int((call.params or {}).get("maxPageSize", MAX_PAGE_SIZE))
        listed = body.get("data") if isinstance(body, dict) else None
        if isinstance(listed, list) and len(listed) > asked:
            raise FlowRunsResponseError(
                f"Extend answered a page of {len(listed)} runs to '{call.name}', which asked for at most "
                f"{asked}; the page is refused unread. Check that the connection's host is Extend's API."
            )
        page = self.parse_model(RunsListing, body, "run listing")
        changes = []
        for item in page.data:
            summary = self.parse_model(WorkflowRunSummary, item, "run summary")
            state = map_status(self.label, summary.status, STATUSES)
            changes.append(RunChange(summary.id, state, summary.status, summary.updatedAt, summary.startTime))
        if not page.nextPageToken:
            return ChangesPage(changes, None)
        return ChangesPage(changes, replace(call, params={**(call.params or {}), "nextPageToken": page.nextPageToken}))

    def start_run(self, api: Api, request: StartRequest) -> FlowRun:
        self.refuse_unsupported(request, "run_name", "file_metadata", "file_guidance", "inputs")
        unknown = sorted(set(request.files) - {FILE_KEY})
        if unknown:
            raise FlowRunsConfigError(
                f"Extend runs take one file under the key {FILE_KEY!r}, not {', '.join(map(repr, unknown))}: "
                f'use files={{"{FILE_KEY}": path}}.'
            )
        paths = [path for _, path in request.iter_files()]
        low, high = PACKAGE_FILES
        if not paths or len(paths) > high:
            raise FlowRunsConfigError(
                f"An Extend run processes one file, or a package of {low} to {high} files given as a list "
                f'(files={{"{FILE_KEY}": [a, b, ...]}}), and this task gives {len(paths)}. For more files, map '
                'the operator over them: FlowRunOperator.partial(...).expand(files=[{"file": p} for p in paths]).'
            )
        metadata = with_usage_tags(request.metadata_with_task_key(), request.started_by)
        size = len(json.dumps(metadata).encode())
        if size > METADATA_LIMIT_BYTES:
            raise FlowRunsConfigError(
                f"metadata is {size} bytes as JSON; Extend accepts at most {METADATA_LIMIT_BYTES}. "
                "Keep large data out of the run metadata."
            )
        file_ids = [{"id": self._upload(api, path)} for path in paths]
        workflow: dict[str, Any] = {"id": request.flow_id}
        if request.flow_version:
            workflow["version"] = request.flow_version
        files: dict[str, Any] = {"file": file_ids[0]} if len(file_ids) == 1 else {"package": {"files": file_ids}}
        body = {"workflow": workflow, **files, "metadata": metadata}
        return self.parse_run(
            api.call(ApiCall("start run", "POST", "/workflow_runs", json=body, idempotent=False)), request.flow_id
        )

    def file_names_of(self, run: FlowRun) -> list[str]:
        files = run.raw.get("files")
        return [str(f.get("name")) for f in files if isinstance(f, dict)] if isinstance(files, list) else []

    def default_file_field(self, api: Api, flow_id: str) -> str | None:
        return FILE_KEY

    def start_batch(
        self,
        api: Api,
        flow_id: str,
        documents: Sequence[BatchDocument],
        flow_version: str | None,
        metadata: Any,
        started_by: StartedBy | None = None,
    ) -> str:
        """Upload the documents given by path (by URL they go as they are), then start them in one call."""
        from airflow_flowruns.platforms.extend import batch  # batch.py builds on this module

        tagged = with_usage_tags(metadata or {}, started_by)
        inputs = [
            batch.BatchInput(
                doc.document_key,
                file_id=self._upload(api, doc.path) if doc.path is not None else None,
                url=doc.url,
                name=doc.name if doc.path is None else None,
                metadata=tagged,
                task_key=doc.run_key,
            )
            for doc in documents
        ]
        (call,) = batch.batch_calls(flow_id, inputs, documents[0].run_key, version=flow_version)
        return batch.parse_batch_created(self, api.call(call), call).batch_id

    def _upload(self, api: Api, path: FilePath) -> str:
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        uploaded = api.call(
            ApiCall("upload file", "POST", "/files/upload", files=[UploadFile("file", path, content_type)])
        )
        file_id = uploaded.get("id") if isinstance(uploaded, dict) else None
        if not file_id:
            raise FlowRunsResponseError(
                "Extend answered the file upload without a file id; check the connection's host."
            )
        return str(file_id)


def _failure_text(run: WorkflowRun) -> str | None:
    """Why a run failed; None for a failed list item, which has no failure fields (only the full run does)."""
    if run.status == "REJECTED":
        return f"rejected in review: {run.rejectionNote}" if run.rejectionNote else "rejected in review"
    if run.is_summary:
        return None
    parts = [text for text in (run.failureReason, run.failureMessage) if text]
    return ": ".join(parts) or "Extend reported the run as failed without a reason."


PLATFORM = Extend
