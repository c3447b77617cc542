"""Extend routes (API version 2026-02-09: unwrapped objects, list envelope ``{object, data, nextPageToken}``)."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from airflow_flowruns.emulator.config import EmulatorConfig, Scenario
from airflow_flowruns.emulator.errors import ApiError
from airflow_flowruns.emulator.served import ServedField, ServedFlow, ServedPlatform, outcome_of
from airflow_flowruns.emulator.state import EmulatedRun, EmulatorState, Entry, new_id
from airflow_flowruns.platforms.extend import emulator_batch, emulator_outputs
from airflow_flowruns.platforms.extend.emulator_files import file_type, pdf_pages

EXTEND_INVOICE_WORKFLOW = "workflow_invoice"
EXTEND_REVIEW_WORKFLOW = "workflow_review"
EXTEND_FAILING_WORKFLOW = "workflow_failing"
EXTEND_SPLIT_WORKFLOW = "workflow_split"
ExtendStep = Literal["CLASSIFY", "EXTRACT", "SPLIT"]


def _invoice_steps() -> list[ExtendStep]:
    return ["CLASSIFY", "EXTRACT"]


class ExtendWorkflow(BaseModel):
    id: str
    name: str
    version: str = "1"
    scenario: Scenario = Field(default_factory=Scenario)
    steps: list[ExtendStep] = Field(default_factory=_invoice_steps)
    """The steps whose results the run's ``stepRuns`` carry (see emulator_outputs.py)."""
    split_file_bytes: int = 64 * 1024
    """Size of each file a SPLIT step produces."""


def _default_extend_workflows() -> list[ExtendWorkflow]:
    return [
        ExtendWorkflow(id=EXTEND_INVOICE_WORKFLOW, name="Invoice extraction", scenario=Scenario(queued_seconds=0.2)),
        ExtendWorkflow(id=EXTEND_REVIEW_WORKFLOW, name="Invoice with review", scenario=Scenario(review=True)),
        ExtendWorkflow(id=EXTEND_SPLIT_WORKFLOW, name="Invoice packet split", steps=["SPLIT", "EXTRACT"]),
        ExtendWorkflow(
            id=EXTEND_FAILING_WORKFLOW,
            name="Always fails",
            scenario=Scenario(outcome="failed", error="OCR_FAILED: the document could not be read"),
        ),
    ]


class ExtendConfig(BaseModel):
    workflows: list[ExtendWorkflow] = Field(default_factory=_default_extend_workflows)


PLATFORM = "extend"
PATH_PREFIXES = ("/files/", "/workflow_runs")
STATUSES = {
    "queued": "PENDING",
    "running": "PROCESSING",
    "review": "NEEDS_REVIEW",
    "completed": "PROCESSED",
    "failed": "FAILED",
}
API_VERSIONS = {"2026-02-09", "2025-04-21", "2024-12-23"}
FINAL = {"PROCESSED", "FAILED", "REJECTED", "CANCELLED"}
CANCELLABLE = {"PENDING", "PROCESSING"}
METADATA_LIMIT_BYTES = 10 * 1024
PACKAGE_FILES = (2, 50)
"""How many files a ``package`` run takes (the SDK's ``WorkflowRunPackageParams``)."""
USAGE_TAGS_FIELD = "extend:usage_tags"
NOT_IN_A_TAG = re.compile(r"[^A-Za-z0-9_-]")
_CODES = {
    400: "INVALID_REQUEST",
    401: "UNAUTHORIZED",
    402: "USAGE_BLOCKED",
    404: "NOT_FOUND",
    422: "INVALID_REQUEST",
    429: "RATE_LIMIT_EXCEEDED",
}

router = APIRouter()
router.include_router(emulator_batch.router)


def error_body(error: ApiError) -> dict[str, Any]:
    code = _CODES.get(error.status, "INTERNAL_ERROR" if error.status >= 500 else "INVALID_REQUEST")
    return {
        "code": code,
        "message": error.message,
        "retryable": error.status == 429 or error.status >= 500,
        "requestId": f"req_{new_id(12)}",
    }


def settings(config: EmulatorConfig) -> ExtendConfig:
    """This platform's section of the emulator's configuration."""
    return config.platform(PLATFORM, ExtendConfig)


def scenarios(config: EmulatorConfig) -> list[tuple[str, Scenario]]:
    return [(workflow.id, workflow.scenario) for workflow in settings(config).workflows]


def served(config: EmulatorConfig) -> ServedPlatform:
    """The workflows served, for the emulator's discovery call and start-up banner."""
    file = ServedField(name="file", about="one file, or a list of {} to {} run as one package".format(*PACKAGE_FILES))
    return ServedPlatform(
        flows=[
            ServedFlow(id=w.id, name=w.name, files=[file], outcome=outcome_of(w.scenario))
            for w in settings(config).workflows
        ],
        notes=["Runs also take metadata; no inputs."],
    )


def new_run_id() -> str:
    return f"workflow_run_{new_id(20)}"


def _state(request: Request) -> EmulatorState:
    header = request.headers.get("authorization", "")
    if not header.startswith("Bearer ") or header.removeprefix("Bearer ") not in request.app.state.config.api_keys:
        raise ApiError(401, "Unauthorized", "Invalid or missing API key")
    if request.headers.get("x-extend-api-version") not in API_VERSIONS:
        raise ApiError(400, "Bad Request", "Missing or unsupported x-extend-api-version header")
    return request.app.state.emulator


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z") if ts is not None else None


def _workflow(request: Request, workflow_id: str) -> ExtendWorkflow:
    for workflow in settings(request.app.state.config).workflows:
        if workflow.id == workflow_id:
            return workflow
    raise ApiError(404, "Not Found", f"Workflow {workflow_id} not found")


def run_object(
    request: Request, run: EmulatedRun, *, summary: bool = False, history: list[Entry] | None = None
) -> dict[str, Any]:
    """The ``WorkflowRun`` a read returns, or the ``WorkflowRunSummary`` a listing returns (``summary``).

    Field for field as the ``extend-ai`` SDK models them: a summary has no ``metadata``, ``failureReason``,
    ``failureMessage``, ``reviewed`` or ``stepRuns``; a full run has no ``createdAt``/``updatedAt``.
    ``history``: the run's history as the listing that sorted it saw it.
    """
    history = history or run.history()
    last = history[-1]
    status = last.status
    workflow = _workflow(request, run.flow_id)
    started = next((e.time for e in history if e.status != "PENDING"), None)
    reviewed = emulator_outputs.was_reviewed(run)
    common: dict[str, Any] = {
        "object": "workflow_run",
        "id": run.id,
        "status": status,
        "workflow": {
            "object": "workflow",
            "id": workflow.id,
            "name": workflow.name,
            "createdAt": "2026-01-05T09:00:00Z",
            "updatedAt": "2026-01-05T09:00:00Z",
        },
        "workflowVersion": {
            "object": "workflow_version",
            "id": f"workflow_version_{workflow.id}",
            "version": run.record.get("version") or workflow.version,
            "name": workflow.name,
            "createdAt": "2026-01-05T09:00:00Z",
        },
        "dashboardUrl": f"https://dashboard.extend.ai/workflows/runs/{run.id}",
        "batchId": run.record.get("batchId"),
        "files": run.record.get("files", []),
        "initialRunAt": _iso(run.created),
        "reviewedByUser": "reviewer@example.com" if reviewed else None,
        "reviewedAt": _iso(last.time) if reviewed else None,
        "rejectionNote": last.message if status == "REJECTED" else None,
        "startTime": _iso(started),
        "endTime": _iso(last.time) if status in FINAL else None,
        "usage": emulator_outputs.usage(run, workflow, status, summary=summary),
    }
    if summary:
        return {**common, "createdAt": _iso(run.created), "updatedAt": _iso(last.time)}
    return {
        **common,
        "metadata": run.record.get("metadata") or {},
        "failureReason": "PROCESSING_ERROR" if status == "FAILED" else None,
        "failureMessage": run.error if status == "FAILED" else None,
        "reviewed": reviewed,
        "stepRuns": emulator_outputs.step_runs(run, workflow),
    }


@router.post("/files/upload")
async def upload_file(request: Request) -> dict[str, Any]:
    state = _state(request)
    async with request.form(max_files=1, max_fields=1) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "Bad Request", "Multipart part 'file' is required")
        name, size = upload.filename or "file", upload.size or 0
        pages = await pdf_pages(upload) if file_type(name) == "PDF" else None
    if size == 0:
        raise ApiError(400, "Bad Request", f"File {name} is empty")
    now = _iso(datetime.now(UTC).timestamp())
    file_id = f"file_{new_id(20)}"
    file: dict[str, Any] = {
        "object": "file",
        "id": file_id,
        "name": name,
        "type": file_type(name),
        "metadata": {} if pages is None else {"pageCount": pages},
        "createdAt": now,
        "updatedAt": now,
    }
    with state.lock:
        state.uploads[file_id] = {**file, "size": size}
    return file


@router.get("/files/{file_id}")
def get_file(request: Request, file_id: str) -> dict[str, Any]:
    _state(request)
    workflows = {workflow.id: workflow for workflow in settings(request.app.state.config).workflows}
    return emulator_outputs.file_object(request, file_id, workflows)


@router.post("/workflow_runs")
async def create_run(request: Request) -> dict[str, Any]:
    state, body, workflow = await workflow_request(request)
    return run_object(request, new_run(state, workflow, run_record(state, body, body["workflow"].get("version"))))


async def workflow_request(request: Request) -> tuple[EmulatorState, dict[str, Any], ExtendWorkflow]:
    """An authorized request's state, its JSON body and the workflow the body names (``workflow.id``)."""
    state = _state(request)
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "Bad Request", "Body must be JSON") from None
    workflow_ref = body.get("workflow") if isinstance(body, dict) else None
    if not isinstance(workflow_ref, dict) or not isinstance(workflow_ref.get("id"), str):
        raise ApiError(400, "Bad Request", "workflow.id is required")
    return state, body, _workflow(request, workflow_ref["id"])


def run_record(state: EmulatorState, body: dict[str, Any], version: str | None) -> dict[str, Any]:
    """What a run keeps of the ``file`` or ``package`` and ``metadata`` it was started with, checked as Extend does."""
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict) or len(json.dumps(metadata).encode()) > METADATA_LIMIT_BYTES:
        raise ApiError(400, "Bad Request", "metadata must be an object of at most 10 KB")
    tags = metadata.get(USAGE_TAGS_FIELD)
    if isinstance(tags, list):  # as Extend does: "any special characters will be automatically removed"
        metadata = {**metadata, USAGE_TAGS_FIELD: [NOT_IN_A_TAG.sub("", str(tag)) for tag in tags]}
    files = [_file_summary(state, ref) for ref in _file_refs(state, body)]
    uploads = [
        {"field": "file", "filename": f["name"], "size": state.uploads.get(f["id"], {}).get("size")} for f in files
    ]
    return {"metadata": metadata, "version": version, "files": files, "uploads": uploads}


def new_run(state: EmulatorState, workflow: ExtendWorkflow, record: dict[str, Any]) -> EmulatedRun:
    """A new run of ``workflow``, moving on with time as the workflow's scenario says."""
    scenario = state.scenarios[(PLATFORM, workflow.id)]
    return state.add_run(EmulatedRun(PLATFORM, new_run_id(), workflow.id, scenario, STATUSES, record))


def _file_refs(state: EmulatorState, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Exactly one of ``file`` (one of url, id, text) or ``package`` (2-50 files by url or id, no outputs)."""
    if ("file" in body) == ("package" in body):
        raise ApiError(400, "Bad Request", "Exactly one of file or package must be provided")
    if "file" in body:
        ref = body["file"]
        if not isinstance(ref, dict) or len({"url", "id", "text"} & set(ref)) != 1:
            raise ApiError(400, "Bad Request", "file must have exactly one of url, id, text")
        return _known_files(state, [ref])
    package = body["package"]
    refs: Any = package.get("files") if isinstance(package, dict) else None
    low, high = PACKAGE_FILES
    if not isinstance(refs, list) or not low <= len(refs) <= high:
        raise ApiError(400, "Bad Request", f"package.files must list {low} to {high} files")
    if body.get("outputs"):
        raise ApiError(400, "Bad Request", "outputs are not supported on package runs")
    if any(not isinstance(r, dict) or len({"url", "id"} & set(r)) != 1 for r in refs):
        raise ApiError(400, "Bad Request", "each package file must have exactly one of url, id")
    keys = [(k, r[k]) for r in refs for k in ("url", "id") if k in r]
    if len(set(keys)) != len(keys):
        raise ApiError(400, "Bad Request", "package.files contains the same file twice")
    return _known_files(state, refs)


def _known_files(state: EmulatorState, refs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for ref in refs:
        if "id" in ref and ref["id"] not in state.uploads:
            raise ApiError(404, "Not Found", f"File {ref['id']} not found")
    return refs


def _file_summary(state: EmulatorState, ref: dict[str, Any]) -> dict[str, Any]:
    """The ``FileSummary`` a run lists for one of its files."""
    upload = state.uploads.get(ref.get("id", ""))
    if upload is None:
        now = _iso(datetime.now(UTC).timestamp())
        name = ref.get("name") or str(ref.get("url", "document")).rsplit("/", 1)[-1]
        upload = {"id": f"file_{new_id(20)}", "name": name, "createdAt": now, "updatedAt": now}
    return {
        "object": "file",
        "id": upload["id"],
        "name": upload["name"],
        "type": file_type(upload["name"]),
        "metadata": upload.get("metadata", {}),
        "createdAt": upload["createdAt"],
        "updatedAt": upload["updatedAt"],
    }


def _run(request: Request, state: EmulatorState, run_id: str) -> EmulatedRun:
    run = state.runs.get(run_id)
    if run is None or run.platform != PLATFORM:
        raise ApiError(404, "Not Found", f"Workflow run {run_id} not found")
    return run


@router.get("/workflow_runs/{run_id}")
def get_run(request: Request, run_id: str) -> dict[str, Any]:
    state = _state(request)
    return run_object(request, _run(request, state, run_id))


@router.post("/workflow_runs/{run_id}/cancel")
def cancel_run(request: Request, run_id: str) -> dict[str, Any]:
    state = _state(request)
    run = _run(request, state, run_id)
    with state.lock:
        if run.status not in CANCELLABLE:
            raise ApiError(400, "Bad Request", f"Workflow run {run_id} is {run.status} and cannot be cancelled")
        run.force("CANCELLING", message="Cancellation requested")
        run.force("CANCELLED", message="Cancelled", after=0.2)
    return run_object(request, run)


@router.get("/workflow_runs")
def list_runs(request: Request) -> dict[str, Any]:
    state = _state(request)
    query = request.query_params
    bound_to = _query_fingerprint(query.multi_items())
    try:
        size = int(query.get("maxPageSize", 100))
        offset = _token_offset(query.get("nextPageToken"), bound_to)
    except ValueError:
        raise ApiError(400, "Bad Request", "maxPageSize and nextPageToken must be valid") from None
    if not 1 <= size <= 1000:
        raise ApiError(400, "Bad Request", "maxPageSize must be between 1 and 1000")
    runs = state.runs_of(PLATFORM, query.get("workflowId"))
    if query.get("status"):
        runs = [run for run in runs if run.status == query["status"]]
    if query.get("batchId"):
        runs = [run for run in runs if run.record.get("batchId") == query["batchId"]]
    # By updatedAt: one snapshot of every run's history per request, so the order and the items agree.
    by_created = query.get("sortBy") == "createdAt"
    histories = {} if by_created else {run.id: run.history() for run in runs}
    runs.sort(
        key=lambda run: run.created if by_created else histories[run.id][-1].time,
        reverse=query.get("sortDir", "desc") == "desc",
    )
    page = [
        run_object(request, run, summary=True, history=histories.get(run.id)) for run in runs[offset : offset + size]
    ]
    envelope: dict[str, Any] = {"object": "list", "data": page}
    if offset + size < len(runs):
        envelope["nextPageToken"] = f"{offset + size}.{bound_to}"
    return envelope


def _query_fingerprint(items: list[tuple[str, str]]) -> str:
    """Cursor tokens are opaque and valid only with the query that returned them, as cursors usually are."""
    kept = sorted((key, value) for key, value in items if key != "nextPageToken")
    return hashlib.sha256(repr(kept).encode()).hexdigest()[:16]


def _token_offset(token: str | None, bound_to: str) -> int:
    if not token:
        return 0
    offset, _, fingerprint = token.partition(".")
    if fingerprint != bound_to:
        raise ValueError("nextPageToken belongs to another query")
    return int(offset)
