"""Noxus: upload each file, then start a workflow run with them as inputs; runs can be stopped.

Unconfirmed wire facts, decided here and nowhere else (see the README's Noxus section):

* A file input is ``{"uri", "name"}`` with the ``uri`` returned by ``POST /v1/file``; a list of files for
  one label is sent as a list of such objects.
* The failure reason is the last ``progress_details.run_logs`` entry whose level is ``error`` (any case),
  else the last log message.
* Noxus documents no dashboard link: the run URL is the run's API resource, overridable with the
  connection extra ``run_url_template`` (fields ``base_url``, ``run_id``, ``flow_id``).
* Noxus runs keep no free-form metadata, so ``metadata`` is refused and no run can be found by its task
  key: a retry finds the earlier try's run only through the task's state store (Airflow 3.3+).
* The SDK's ``Run`` model has no ``started_at``: a run's start time and duration are not known.
* The listing's order is not documented, so paging never stops early on a date window.
* After an ambiguous start (a 5xx, timeout or lost answer), the run is the one whose ``input`` equals the
  input just sent, on the first or last page of the workflow's runs: the uploaded files' ``uri``s are new,
  so only this start can have made it. A start without files is sent again (nothing tells its run apart).
* ``flow_version`` is sent as ``workflow_version_id``.
* The SDK's ``Run`` and the listing's reference page report no usage, no credits, pages or tokens: a run's
  ``usage`` is None.
"""

from __future__ import annotations

import mimetypes
from dataclasses import replace
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from airflow_flowruns.exceptions import FlowRunsConfigError, FlowRunsError, FlowRunsResponseError
from airflow_flowruns.platforms.base import Api, ApiCall, FlowRun, Platform, RunQuery, RunsPage, RunState, map_status
from airflow_flowruns.platforms.noxus import FACTS
from airflow_flowruns.platforms.start import StartRequest, UploadFile
from airflow_flowruns.platforms.values import path_segment

STATUSES: dict[str, RunState] = {
    "queued": RunState.QUEUED,
    "running": RunState.RUNNING,
    "awaiting_human_feedback": RunState.NEEDS_REVIEW,
    "completed": RunState.SUCCEEDED,
    "failed": RunState.FAILED,
    "stopped": RunState.CANCELLED,
}

DEFAULT_RUN_URL_TEMPLATE = "{base_url}/v1/workflows/{flow_id}/runs/{run_id}"
PAGE_SIZE = 100
MAX_PAGE_SIZE = 100


class ProgressDetails(BaseModel):
    model_config = ConfigDict(extra="allow")

    run_logs: list[Any] = Field(default_factory=list)


class Run(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    workflow_id: str | None = None
    status: str
    created_at: datetime | None = None
    finished_at: datetime | None = None
    progress_details: ProgressDetails | None = None


class RunsListing(BaseModel):
    model_config = ConfigDict(extra="allow")

    items: list[dict[str, Any]] = Field(default_factory=list)
    page: int = 1
    pages: int = 1


class Noxus(Platform, facts=FACTS):
    takes_metadata = False
    can_cancel = True
    keeps_task_key = False
    keyed_file_names = True
    """A run's ``input`` holds its files' ``{uri, name}`` (``noxus_sdk`` ``Run.input``): a batch names its
    documents' files by run key, so a batch's runs are found by key although runs keep no metadata."""
    largest_page = MAX_PAGE_SIZE

    def file_names_of(self, run: FlowRun) -> list[str]:
        inputs = run.raw.get("input")
        values = inputs.values() if isinstance(inputs, dict) else ()
        refs = [ref for value in values for ref in (value if isinstance(value, list) else [value])]
        return [str(ref["name"]) for ref in refs if isinstance(ref, dict) and "name" in ref]

    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.settings.api_key}

    def test_call(self) -> ApiCall:
        return ApiCall("list runs", "GET", "/v1/runs", params={"page": 1, "size": 1})

    def get_run_call(self, flow_id: str | None, run_id: str) -> ApiCall:
        run = path_segment(run_id, "run_id")
        path = f"/v1/workflows/{path_segment(flow_id, 'flow_id')}/runs/{run}" if flow_id else f"/v1/runs/{run}"
        return ApiCall("get run", "GET", path, ids={**_flow_ids(flow_id), "run id": run_id})

    def cancel_call(self, flow_id: str | None, run_id: str) -> ApiCall:
        return ApiCall("stop run", "POST", f"/v1/runs/{path_segment(run_id, 'run_id')}/stop", ids={"run id": run_id})

    def parse_run(self, body: Any, flow_id: str | None = None) -> FlowRun:
        run = self.parse_model(Run, body, "run")
        state = map_status(self.label, run.status, STATUSES)
        workflow_id = run.workflow_id or flow_id
        template = self.settings.extras.get("run_url_template") or DEFAULT_RUN_URL_TEMPLATE
        ended = run.finished_at if state.is_final else None
        return FlowRun(
            id=run.id,
            flow_id=workflow_id,
            platform=self.name,
            state=state,
            status=run.status,
            error=_failure_text(run) if state is RunState.FAILED else None,
            url=template.format(base_url=self.settings.base_url, run_id=run.id, flow_id=workflow_id),
            created_at=run.created_at,
            ended_at=ended,
            raw=body,
        )

    def list_runs_call(self, query: RunQuery) -> ApiCall:
        """Noxus filters neither by state nor by date: both are applied client-side."""
        path = f"/v1/workflows/{path_segment(query.flow_id, 'flow_id')}/runs" if query.flow_id else "/v1/runs"
        size = min(query.page_size or PAGE_SIZE, MAX_PAGE_SIZE)
        return ApiCall("list runs", "GET", path, params={"page": 1, "size": size}, ids=_flow_ids(query.flow_id))

    def parse_runs_page(self, body: Any, call: ApiCall, query: RunQuery) -> RunsPage:
        page = self.parse_model(RunsListing, body, "run listing")
        runs = [self.parse_run(item, query.flow_id) for item in page.items]
        if not runs or page.page >= page.pages:
            return RunsPage(runs, None)
        return RunsPage(runs, replace(call, params={**(call.params or {}), "page": page.page + 1}))

    def start_run(self, api: Api, request: StartRequest) -> FlowRun:
        self.refuse_unsupported(request, "run_name", "metadata", "file_metadata", "file_guidance")
        both = sorted(set(request.files) & set(request.inputs))
        if both:
            raise FlowRunsConfigError(
                f"{', '.join(map(repr, both))} given both in files and in inputs; a workflow input takes one value."
            )
        if not request.files and not request.inputs:
            raise FlowRunsConfigError("A Noxus run needs its workflow inputs: give files, inputs, or both.")
        # Reading one page of the workflow's runs answers 404 for an unknown workflow, before any upload.
        runs_path = f"/v1/workflows/{path_segment(request.flow_id, 'flow_id')}/runs"
        flow = _flow_ids(request.flow_id)
        api.call(ApiCall("check workflow", "GET", runs_path, params={"size": 1}, ids=flow))
        inputs: dict[str, Any] = dict(request.inputs)
        for label, value in request.files.items():
            refs = [self._upload(api, path) for path in (value if isinstance(value, tuple) else (value,))]
            inputs[label] = refs if isinstance(value, tuple) else refs[0]
        body: dict[str, Any] = {"input": inputs}
        if request.flow_version:
            body["workflow_version_id"] = request.flow_version
        call = ApiCall("start run", "POST", runs_path, json=body, idempotent=False, ids=flow)
        try:
            return self.parse_run(api.call(call), request.flow_id)
        except FlowRunsError as exc:
            found = (
                self._run_with_input(api, request.flow_id, inputs) if exc.outcome_unknown and request.files else None
            )
            if found is None:
                raise
            return found

    def _run_with_input(self, api: Api, workflow_id: str, inputs: dict[str, Any]) -> FlowRun | None:
        """After an ambiguous start: the run whose ``input`` is the one just sent, or None.

        Runs keep no task key, but the start's input names files uploaded by this very start (their
        ``uri``s are new), so a run with that input can only be this one. The listing's order is not
        documented: its first and last pages are read, two requests at most.
        """
        path, flow = f"/v1/workflows/{path_segment(workflow_id, 'flow_id')}/runs", _flow_ids(workflow_id)
        first = self.parse_model(
            RunsListing,
            api.call(ApiCall("find run", "GET", path, params={"page": 1, "size": MAX_PAGE_SIZE}, ids=flow)),
            "run listing",
        )
        pages = [first]
        if first.pages > 1:
            page = {"page": first.pages, "size": MAX_PAGE_SIZE}
            last = api.call(ApiCall("find run", "GET", path, params=page, ids=flow))
            pages.append(self.parse_model(RunsListing, last, "run listing"))
        item = next((item for page in pages for item in page.items if item.get("input") == inputs), None)
        return self.parse_run(item, workflow_id) if item is not None else None

    def _upload(self, api: Api, path: Any) -> dict[str, str]:
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        uploaded = api.call(ApiCall("upload file", "POST", "/v1/file", files=[UploadFile("file", path, content_type)]))
        if not isinstance(uploaded, dict) or not uploaded.get("uri"):
            raise FlowRunsResponseError("Noxus answered the file upload without a uri; check the connection's host.")
        return {"uri": uploaded["uri"], "name": path.name}


def _flow_ids(flow_id: str | None) -> dict[str, str]:
    """The ids of a call under ``/v1/workflows/{flow_id}``; none for one under ``/v1/runs``."""
    return {"flow id": flow_id} if flow_id else {}


def _failure_text(run: Run) -> str:
    logs = run.progress_details.run_logs if run.progress_details else []
    entries = [log if isinstance(log, dict) else {"message": str(log)} for log in logs]
    errors = [e for e in entries if str(e.get("level", "")).lower() == "error" and e.get("message")]
    messages = errors or [e for e in entries if e.get("message")]
    return str(messages[-1]["message"]) if messages else "Noxus reported the run as failed without a log message."


PLATFORM = Noxus
