"""TableFlow v2 routes, served under ``/v2`` as the real API is (``https://api.tableflow.com/v2``).

Shapes follow the reference pages (``tableflow-run-flow.txt``, ``tableflow-list-flow-runs.txt``): times,
``created_at`` and ``updated_at`` included, are unix seconds. Where the pages are silent, unconfirmed
choices: a missing required file is a 422, an oversize file a 413, and error bodies are
``{"error": title, "message": detail}`` for every status.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile

from airflow_flowruns.emulator.config import MIB, EmulatorConfig, Scenario
from airflow_flowruns.emulator.errors import ApiError
from airflow_flowruns.emulator.served import ServedField, ServedFlow, ServedPlatform, outcome_of
from airflow_flowruns.emulator.state import EmulatedRun, EmulatorState, new_id

TABLEFLOW_RECONCILIATION_FLOW = "dk4g1tUg1uHLs8YU"
TABLEFLOW_REVIEW_FLOW = "rv7Qm2ReviewFlow0"
TABLEFLOW_FAILING_FLOW = "fa1LedFlow000000"
TABLEFLOW_SMALL_FILE_FLOW = "sm4llFileFlow000"
TABLEFLOW_LARGE_FILE_FLOW = "b1gUploadFlow000"
TABLEFLOW_INACTIVE_FLOW = "in4ctiveFlow0000"


class TableFlowFileField(BaseModel):
    key: str
    name: str
    required: bool = False
    file_types: list[str] = Field(default_factory=lambda: ["pdf", "image"])
    max_file_size: int = 50 * MIB


class TableFlowFlow(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    workspace_id: str = "ws_emulator"
    name: str
    description: str = ""
    active: bool = True
    created_at: str = "2026-01-05T09:00:00Z"
    updated_at: str = "2026-01-05T09:00:00Z"
    file_fields: list[TableFlowFileField]
    steps: list[dict[str, Any]] = Field(
        default_factory=lambda: [
            {"id": "step_1", "title": "Extract", "description": "", "type": "extraction", "order": 1, "config": {}}
        ]
    )
    scenario: Scenario = Field(default_factory=Scenario)

    def api_object(self) -> dict[str, Any]:
        """The flow as the API returns it: emulator-only fields left out."""
        data = self.model_dump(exclude={"scenario", "file_fields"})
        data["file_input_config"] = {"file_fields": [f.model_dump() for f in self.file_fields]}
        return data


def _document(max_size: int = 50 * MIB) -> list[TableFlowFileField]:
    return [TableFlowFileField(key="document", name="Document", required=True, max_file_size=max_size)]


def _default_tableflow_flows() -> list[TableFlowFlow]:
    return [
        TableFlowFlow(
            id=TABLEFLOW_RECONCILIATION_FLOW,
            name="PO reconciliation",
            file_fields=[
                TableFlowFileField(key="purchase_order", name="Purchase order", required=True, file_types=["pdf"]),
                TableFlowFileField(key="invoice", name="Invoice", required=True),
                TableFlowFileField(key="attachments", name="Attachments"),
            ],
            steps=[
                {"id": "step_1", "title": "Extract", "description": "", "type": "extraction", "order": 1, "config": {}},
                {
                    "id": "step_2",
                    "title": "Reconcile",
                    "description": "",
                    "type": "reconciliation",
                    "order": 2,
                    "config": {},
                },
            ],
        ),
        TableFlowFlow(
            id=TABLEFLOW_REVIEW_FLOW,
            name="Invoice with review",
            file_fields=_document(),
            scenario=Scenario(review=True),
        ),
        TableFlowFlow(
            id=TABLEFLOW_FAILING_FLOW,
            name="Always fails",
            file_fields=_document(),
            scenario=Scenario(outcome="failed", error="Extraction failed: the document is unreadable"),
        ),
        TableFlowFlow(id=TABLEFLOW_SMALL_FILE_FLOW, name="Small files only", file_fields=_document(MIB)),
        TableFlowFlow(id=TABLEFLOW_LARGE_FILE_FLOW, name="Large scans", file_fields=_document(1024 * MIB)),
        TableFlowFlow(id=TABLEFLOW_INACTIVE_FLOW, name="Retired", active=False, file_fields=_document()),
    ]


class TableFlowConfig(BaseModel):
    flows: list[TableFlowFlow] = Field(default_factory=_default_tableflow_flows)


PLATFORM = "tableflow"
BASE_PATH = "/v2"
PATH_PREFIXES = (f"{BASE_PATH}/flows",)
STATUSES = {
    "queued": "processing",
    "running": "processing",
    "review": "review",
    "completed": "completed",
    "failed": "failed",
}
FINAL = {"completed", "failed"}
_EXTENSIONS = {"pdf": {".pdf"}, "image": {".png", ".jpg", ".jpeg", ".gif", ".tif", ".tiff", ".bmp", ".webp", ".heic"}}

router = APIRouter(prefix=BASE_PATH)


def settings(config: EmulatorConfig) -> TableFlowConfig:
    """This platform's section of the emulator's configuration."""
    return config.platform(PLATFORM, TableFlowConfig)


def scenarios(config: EmulatorConfig) -> list[tuple[str, Scenario]]:
    return [(flow.id, flow.scenario) for flow in settings(config).flows]


def served(config: EmulatorConfig) -> ServedPlatform:
    """The flows served, for the emulator's discovery call and start-up banner."""
    return ServedPlatform(
        flows=[
            ServedFlow(
                id=flow.id,
                name=flow.name,
                files=[
                    ServedField(
                        name=f.key,
                        required=f.required,
                        about=f"{' or '.join(f.file_types)}, up to {f.max_file_size // MIB} MiB",
                    )
                    for f in flow.file_fields
                ],
                outcome=outcome_of(flow.scenario) if flow.active else "not served (inactive): the API answers 404",
            )
            for flow in settings(config).flows
        ],
        notes=[
            "A file field takes one file or a list; runs also take run_name, metadata, file_metadata, file_guidance."
        ],
    )


def new_run_id() -> str:
    return new_id()


def error_body(error: ApiError) -> dict[str, Any]:
    return {"error": error.title, "message": error.message}


def authorize(request: Request) -> None:
    header = request.headers.get("authorization", "")
    keys = request.app.state.config.api_keys
    if not header.startswith("Bearer ") or header.removeprefix("Bearer ") not in keys:
        raise ApiError(401, "Unauthorized", "Invalid or missing API key")
    request.state.auth = "ok"


def _state(request: Request) -> EmulatorState:
    authorize(request)
    return request.app.state.emulator


def _flows(request: Request) -> dict[str, TableFlowFlow]:
    return {flow.id: flow for flow in settings(request.app.state.config).flows}


def _active_flow(request: Request, flow_id: str) -> TableFlowFlow:
    flow = _flows(request).get(flow_id)
    if flow is None or not flow.active:
        raise ApiError(404, "Not Found", f"Flow {flow_id} not found")
    return flow


def run_object(run: EmulatedRun) -> dict[str, Any]:
    history = run.history()
    status = history[-1].status
    final = status in FINAL
    end = history[-1].time if final else None
    return {
        "id": run.id,
        "flow_id": run.flow_id,
        "workspace_id": run.record.get("workspace_id", "ws_emulator"),
        "status": status,
        "status_history": [{"status": e.status, "time": int(e.time), "message": e.message} for e in history],
        "error": run.error if status == "failed" else None,
        "metadata": run.record.get("metadata") or {},
        "trigger_method": run.record.get("trigger_method", "api"),
        "start_time": int(run.created),
        "end_time": int(end) if end else None,
        "duration": int((end - run.created) * 1000) if end else 0,
        "drive_files": {
            "reconciliation.xlsx": {
                "file_id": f"file_{run.id}",
                "mime_type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                "sheets": ["Summary"],
            }
        }
        if status == "completed"
        else {},
        "created_at": int(run.created),
        "updated_at": int(history[-1].time),
    }


@router.get("/flows")
def list_flows(request: Request) -> list[dict[str, Any]]:
    _state(request)
    return [flow.api_object() for flow in _flows(request).values() if flow.active]


@router.get("/flows/runs")
def list_workspace_runs(request: Request) -> dict[str, Any]:
    state = _state(request)
    query = request.query_params
    limit, offset = _int(query, "limit", 100), _int(query, "offset", 0)
    if not 1 <= limit <= 1000 or offset < 0:
        raise ApiError(422, "Unprocessable Entity", "limit must be between 1 and 1000 and offset at least 0")
    runs = [run_object(r) for r in state.runs_of(PLATFORM, query.get("flow_id"))]
    if query.get("status"):
        runs = [r for r in runs if r["status"] == query["status"]]
    page = runs[offset : offset + limit]
    next_offset = offset + limit if offset + limit < len(runs) else None
    return {
        "flow_runs": page,
        "pagination": {"total": len(runs), "limit": limit, "offset": offset, "next_offset": next_offset},
    }


@router.get("/flows/runs/{run_id}")
def get_run(request: Request, run_id: str) -> dict[str, Any]:
    state = _state(request)
    run = state.runs.get(run_id)
    if run is None or run.platform != PLATFORM:
        raise ApiError(404, "Not Found", f"Run {run_id} not found")
    flow = _flows(request)[run.flow_id]
    return {**run_object(run), "flow": {"id": flow.id, "name": flow.name, "workspace_id": flow.workspace_id}}


@router.get("/flows/{flow_id}/runs")
def list_flow_runs(request: Request, flow_id: str) -> list[dict[str, Any]]:
    state = _state(request)
    _active_flow(request, flow_id)
    return [run_object(r) for r in state.runs_of(PLATFORM, flow_id)]


@router.post("/flows/{flow_id}/run")
async def start_run(request: Request, flow_id: str) -> dict[str, Any]:
    state = _state(request)
    flow = _active_flow(request, flow_id)
    async with request.form(max_files=1000, max_fields=1000) as form:
        record = _check_form(flow, form.multi_items())
    run = EmulatedRun(
        PLATFORM,
        new_run_id(),
        flow.id,
        state.scenarios[(PLATFORM, flow.id)],
        STATUSES,
        {**record, "workspace_id": flow.workspace_id},
    )
    return run_object(state.add_run(run))


def _check_form(flow: TableFlowFlow, items: list[tuple[str, Any]]) -> dict[str, Any]:
    fields = {f.key: f for f in flow.file_fields}
    record: dict[str, Any] = {"name": None, "metadata": {}, "files": [], "file_metadata": {}, "guidance": {}}
    for part, value in items:
        if isinstance(value, UploadFile):
            key = _file_key(part, fields)
            size = value.size or 0
            spec = fields[key]
            suffix = "." + (value.filename or "").rsplit(".", 1)[-1].lower()
            if not any(suffix in _EXTENSIONS.get(kind, {f".{kind}"}) for kind in spec.file_types):
                raise ApiError(
                    422,
                    "Unprocessable Entity",
                    f"File {value.filename} is not an accepted type for {key}: {spec.file_types}",
                )
            if size == 0:
                raise ApiError(422, "Unprocessable Entity", f"File {value.filename} for {key} is empty")
            if size > spec.max_file_size:
                raise ApiError(
                    413,
                    "Payload Too Large",
                    f"File {value.filename} exceeds the {spec.max_file_size} byte limit of {key}",
                )
            record["files"].append({"field": part, "filename": value.filename, "size": size})
        elif part == "name":
            record["name"] = value
        elif part == "metadata":
            record["metadata"] = _json_object(part, value)
        elif part.endswith("_metadata") and part.removesuffix("_metadata") in fields:
            record["file_metadata"][part.removesuffix("_metadata")] = _json_object(part, value)
        elif part.endswith("_guidance") and part.removesuffix("_guidance") in fields:
            record["guidance"][part.removesuffix("_guidance")] = value
        else:
            raise ApiError(422, "Unprocessable Entity", f"Unknown form field {part}")
    sent = {_file_key(f["field"], fields) for f in record["files"]}
    missing = [key for key, spec in fields.items() if spec.required and key not in sent]
    if missing:
        raise ApiError(422, "Unprocessable Entity", f"Missing required file field(s): {', '.join(missing)}")
    return record


def _file_key(part: str, fields: dict[str, Any]) -> str:
    if part in fields:
        return part
    key, _, index = part.rpartition("_")
    if key in fields and index.isdigit() and int(index) >= 1:
        return key
    raise ApiError(422, "Unprocessable Entity", f"Unknown file field {part}")


def _json_object(part: str, value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ApiError(422, "Unprocessable Entity", f"{part} must be a JSON object")
    return parsed


def _int(query: Any, name: str, default: int) -> int:
    try:
        return int(query.get(name, default))
    except ValueError:
        raise ApiError(422, "Unprocessable Entity", f"{name} must be an integer") from None
