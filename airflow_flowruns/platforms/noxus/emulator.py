"""Noxus routes: files, workflow runs, page envelopes, ``X-API-Key`` auth, 422 ``{"detail": [...]}`` errors."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from airflow_flowruns.emulator.config import EmulatorConfig, Scenario
from airflow_flowruns.emulator.errors import ApiError
from airflow_flowruns.emulator.served import ServedField, ServedFlow, ServedPlatform, outcome_of
from airflow_flowruns.emulator.state import EmulatedRun, EmulatorState
from airflow_flowruns.platforms.noxus import emulator_outputs

NOXUS_DOCUMENT_WORKFLOW = "5f0c7d1e-0000-4000-8000-00000000d0c1"
NOXUS_REVIEW_WORKFLOW = "5f0c7d1e-0000-4000-8000-0000000f33d0"
NOXUS_FAILING_WORKFLOW = "5f0c7d1e-0000-4000-8000-00000000fa11"


class NoxusInput(BaseModel):
    label: str
    kind: Literal["file", "text"] = "text"
    required: bool = True


class NoxusWorkflow(BaseModel):
    id: str
    name: str
    inputs: list[NoxusInput] = Field(
        default_factory=lambda: [NoxusInput(label="document", kind="file"), NoxusInput(label="instructions")]
    )
    scenario: Scenario = Field(default_factory=Scenario)


def _default_noxus_workflows() -> list[NoxusWorkflow]:
    return [
        NoxusWorkflow(id=NOXUS_DOCUMENT_WORKFLOW, name="Document summary", scenario=Scenario(queued_seconds=0.2)),
        NoxusWorkflow(id=NOXUS_REVIEW_WORKFLOW, name="Summary with approval", scenario=Scenario(review=True)),
        NoxusWorkflow(
            id=NOXUS_FAILING_WORKFLOW,
            name="Always fails",
            scenario=Scenario(outcome="failed", error="Node 'Extract text' failed: unsupported file"),
        ),
    ]


class NoxusConfig(BaseModel):
    workflows: list[NoxusWorkflow] = Field(default_factory=_default_noxus_workflows)


PLATFORM = "noxus"
PATH_PREFIXES = ("/v1/",)
STATUSES = {
    "queued": "queued",
    "running": "running",
    "review": "awaiting_human_feedback",
    "completed": "completed",
    "failed": "failed",
}
FINAL = {"completed", "failed", "stopped"}
GROUP_ID = "0b9a1f4e-0000-4000-8000-00000000a001"
"""The workspace (group) every emulated run belongs to; a UUID like the reference page's ids."""
_PROGRESS = {"queued": 0, "running": 50, "awaiting_human_feedback": 80}

router = APIRouter()


def error_body(error: ApiError) -> dict[str, Any]:
    if error.status == 422:
        loc = error.fields.get("loc", ["body"])
        return {"detail": [{"loc": loc, "msg": error.message, "type": error.fields.get("type", "value_error")}]}
    return {"detail": error.message}


def settings(config: EmulatorConfig) -> NoxusConfig:
    """This platform's section of the emulator's configuration."""
    return config.platform(PLATFORM, NoxusConfig)


def scenarios(config: EmulatorConfig) -> list[tuple[str, Scenario]]:
    return [(workflow.id, workflow.scenario) for workflow in settings(config).workflows]


def served(config: EmulatorConfig) -> ServedPlatform:
    """The workflows served, for the emulator's discovery call and start-up banner."""
    return ServedPlatform(
        flows=[
            ServedFlow(
                id=workflow.id,
                name=workflow.name,
                files=[ServedField(name=i.label, required=i.required) for i in workflow.inputs if i.kind == "file"],
                inputs=[ServedField(name=i.label, required=i.required) for i in workflow.inputs if i.kind == "text"],
                outcome=outcome_of(workflow.scenario),
            )
            for workflow in settings(config).workflows
        ],
        notes=["A workflow's inputs are keyed by label: a file input goes in files, a text input in inputs."],
    )


def new_run_id() -> str:
    return str(uuid.uuid4())


def _state(request: Request) -> EmulatorState:
    if request.headers.get("x-api-key") not in request.app.state.config.api_keys:
        raise ApiError(401, "Unauthorized", "Invalid or missing API key")
    return request.app.state.emulator


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


def _workflow(request: Request, workflow_id: str) -> NoxusWorkflow:
    for workflow in settings(request.app.state.config).workflows:
        if workflow.id == workflow_id:
            return workflow
    raise ApiError(404, "Not Found", f"Workflow {workflow_id} not found")


def run_object(
    request: Request, run: EmulatedRun, *, listed: bool = False, with_workflow: bool = False
) -> dict[str, Any]:
    """A run as the ``noxus-sdk`` ``Run`` model has it (start, read, stop, a workflow's listing).

    ``listed``: an item of the workspace listing ``GET /v1/runs``, as its reference page shows it (no
    ``output`` or ``progress_details``; ``definitions``, ``source`` and the embedded ``workflow`` instead).
    ``with_workflow``: ``GET /v1/runs/{id}``, the run with its embedded workflow. No ``started_at``:
    neither the SDK model nor the reference page has one.
    """
    history = run.history()
    status = history[-1].status
    data: dict[str, Any] = {
        "id": run.id,
        "group_id": GROUP_ID,
        "workflow_id": run.flow_id,
        "input": run.record.get("input", {}),
        "node_ids": [],
        "status": status,
        "progress": 100 if status in FINAL else _PROGRESS.get(status, 0),
        "created_at": _iso(run.created),
        "finished_at": _iso(history[-1].time) if status in FINAL else None,
    }
    if not listed:
        logs = [
            {"level": "error" if e.error else "info", "message": e.error or e.message, "timestamp": _iso(e.time)}
            for e in history
        ]
        data["progress_details"] = {"executed_nodes": [], "running_nodes": [], "run_logs": logs}
        done = status == "completed"
        data["output"] = emulator_outputs.output(run) if done else None
    if listed or with_workflow:
        data.update(definitions={}, source="api")
    if with_workflow:
        workflow = _workflow(request, run.flow_id)
        data["workflow"] = {
            "id": workflow.id,
            "group_id": GROUP_ID,
            "name": workflow.name,
            "type": "flow",
            "definition": {},
            "last_updated_at": "2026-01-05T09:00:00+00:00",
            "last_run_at": _iso(run.created),
            "created_at": "2026-01-05T09:00:00+00:00",
            "deleted_at": None,
            "runs_count": 1,
            "author_name": "Emulator",
            "description": "",
            "saved": True,
            "error_handler": None,
        }
    return data


@router.post("/v1/file")
async def upload_file(request: Request) -> dict[str, Any]:
    state = _state(request)
    async with request.form(max_files=1, max_fields=1) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "Unprocessable Entity", "Field required", loc=["body", "file"], type="missing")
        name, size, content_type = upload.filename or "file", upload.size or 0, upload.content_type
    file_id = str(uuid.uuid4())
    uri = f"noxus://files/{file_id}"
    file: dict[str, Any] = {
        "id": file_id,
        "uri": uri,
        "size": size,
        "filename": name,
        "content_type": content_type,
        # Not in the API notes, but required by the official SDK's File model: the SDK wins.
        "group_id": None,
        "source_type": "Document",
        "source_metadata": None,
        "created_at": _iso(datetime.now(UTC).timestamp()),
    }
    with state.lock:
        state.uploads[uri] = file
    return file


def _check_input(workflow: NoxusWorkflow, state: EmulatorState, given: Any) -> list[dict[str, Any]]:
    if not isinstance(given, dict):
        raise ApiError(422, "Unprocessable Entity", "Input should be a valid dictionary", loc=["body", "input"])
    labels = {spec.label: spec for spec in workflow.inputs}
    for label in given:
        if label not in labels:
            raise ApiError(422, "Unprocessable Entity", f"Unknown input {label}", loc=["body", "input", label])
    uploads = []
    for spec in workflow.inputs:
        if label_value := given.get(spec.label):
            if spec.kind == "file":
                for ref in label_value if isinstance(label_value, list) else [label_value]:
                    if not isinstance(ref, dict) or ref.get("uri") not in state.uploads:
                        raise ApiError(
                            422,
                            "Unprocessable Entity",
                            "File input needs the uri of an uploaded file",
                            loc=["body", "input", spec.label],
                        )
                    upload = state.uploads[ref["uri"]]
                    uploads.append({"field": spec.label, "filename": upload["filename"], "size": upload["size"]})
        elif spec.required:
            raise ApiError(
                422, "Unprocessable Entity", "Field required", loc=["body", "input", spec.label], type="missing"
            )
    return uploads


@router.post("/v1/workflows/{workflow_id}/runs")
async def start_run(request: Request, workflow_id: str) -> dict[str, Any]:
    state = _state(request)
    workflow = _workflow(request, workflow_id)
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(422, "Unprocessable Entity", "JSON decode error", loc=["body"]) from None
    if not isinstance(body, dict) or "input" not in body:
        raise ApiError(422, "Unprocessable Entity", "Field required", loc=["body", "input"], type="missing")
    uploads = _check_input(workflow, state, body["input"])
    record = {"input": body["input"], "uploads": uploads, "workflow_version_id": body.get("workflow_version_id")}
    scenario = state.scenarios[(PLATFORM, workflow.id)]
    run = EmulatedRun(PLATFORM, new_run_id(), workflow.id, scenario, STATUSES, record)
    return run_object(request, state.add_run(run))


def _run(state: EmulatorState, run_id: str, workflow_id: str | None = None) -> EmulatedRun:
    run = state.runs.get(run_id)
    if run is None or run.platform != PLATFORM or workflow_id not in (None, run.flow_id):
        raise ApiError(404, "Not Found", f"Run {run_id} not found")
    return run


@router.get("/v1/workflows/{workflow_id}/runs/{run_id}")
def get_workflow_run(request: Request, workflow_id: str, run_id: str) -> dict[str, Any]:
    return run_object(request, _run(_state(request), run_id, workflow_id))


@router.get("/v1/runs/{run_id}")
def get_run(request: Request, run_id: str) -> dict[str, Any]:
    return run_object(request, _run(_state(request), run_id), with_workflow=True)


@router.post("/v1/runs/{run_id}/stop")
def stop_run(request: Request, run_id: str) -> dict[str, Any]:
    state = _state(request)
    run = _run(state, run_id)
    with state.lock:
        if run.status not in FINAL:
            run.force("stopped", message="Stopped by request")
    return run_object(request, run)


def _page(request: Request, runs: list[EmulatedRun], *, listed: bool = False) -> dict[str, Any]:
    try:
        page, size = int(request.query_params.get("page", 1)), int(request.query_params.get("size", 50))
    except ValueError:
        raise ApiError(422, "Unprocessable Entity", "Input should be a valid integer", loc=["query"]) from None
    if page < 1 or not 1 <= size <= 100:
        raise ApiError(422, "Unprocessable Entity", "page must be >= 1 and size between 1 and 100", loc=["query"])
    items = [
        run_object(request, run, listed=listed, with_workflow=listed) for run in runs[(page - 1) * size : page * size]
    ]
    return {"items": items, "total": len(runs), "page": page, "size": size, "pages": max(1, -(-len(runs) // size))}


@router.get("/v1/file/{file_id}")
def download_file(request: Request, file_id: str) -> Response:
    _state(request)
    return emulator_outputs.download(request, file_id)


@router.get("/v1/runs")
def list_runs(request: Request) -> dict[str, Any]:
    return _page(request, _state(request).runs_of(PLATFORM), listed=True)


@router.get("/v1/workflows/{workflow_id}/runs")
def list_workflow_runs(request: Request, workflow_id: str) -> dict[str, Any]:
    state = _state(request)
    _workflow(request, workflow_id)
    return _page(request, state.runs_of(PLATFORM, workflow_id))
