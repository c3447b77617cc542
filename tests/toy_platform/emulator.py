"""Toy's part of the bundled emulator: its routes under ``/toy/v1``, ``Bearer`` keys, ``{"error"}`` bodies."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from airflow_flowruns.emulator.config import EmulatorConfig, Scenario
from airflow_flowruns.emulator.errors import ApiError
from airflow_flowruns.emulator.served import ServedField, ServedFlow, ServedPlatform, outcome_of
from airflow_flowruns.emulator.state import EmulatedRun, EmulatorState, new_id

TOY_FLOW = "toy-summary"


class ToyFlow(BaseModel):
    id: str
    scenario: Scenario = Field(default_factory=lambda: Scenario(processing_seconds=0.2))


class ToyConfig(BaseModel):
    flows: list[ToyFlow] = Field(default_factory=lambda: [ToyFlow(id=TOY_FLOW)])


PLATFORM = "toy"
BASE_PATH = "/toy/v1"
PATH_PREFIXES = (f"{BASE_PATH}/",)
STATUSES = {"queued": "waiting", "running": "working", "review": "checking", "completed": "done", "failed": "broken"}
FINAL = {"done", "broken"}

router = APIRouter(prefix=BASE_PATH)


def settings(config: EmulatorConfig) -> ToyConfig:
    """This platform's section of the emulator's configuration."""
    return config.platform(PLATFORM, ToyConfig)


def scenarios(config: EmulatorConfig) -> list[tuple[str, Scenario]]:
    return [(flow.id, flow.scenario) for flow in settings(config).flows]


def served(config: EmulatorConfig) -> ServedPlatform:
    """The flows served, for the emulator's discovery call and start-up banner."""
    return ServedPlatform(
        flows=[
            ServedFlow(
                id=flow.id, name=flow.id, files=[ServedField(name="document")], outcome=outcome_of(flow.scenario)
            )
            for flow in settings(config).flows
        ]
    )


def new_run_id() -> str:
    return f"toy_{new_id()}"


def error_body(error: ApiError) -> dict[str, Any]:
    return {"error": error.message}


def _state(request: Request) -> EmulatorState:
    header = request.headers.get("authorization", "")
    if not header.startswith("Bearer ") or header.removeprefix("Bearer ") not in request.app.state.config.api_keys:
        raise ApiError(401, "Unauthorized", "Invalid or missing API key")
    return request.app.state.emulator


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def run_object(run: EmulatedRun) -> dict[str, Any]:
    history = run.history()
    last = history[-1]
    files = run.record.get("files", [])
    return {
        "id": run.id,
        "flow_id": run.flow_id,
        "status": last.status,
        "error": run.error if last.status == "broken" else None,
        "metadata": run.record.get("metadata") or {},
        "created_at": _iso(run.created),
        "updated_at": _iso(last.time),
        "finished_at": _iso(last.time) if last.status in FINAL else None,
        "result": {"documents": len(files), "summary": f"Read {len(files)} document(s)"}
        if last.status == "done"
        else None,
    }


@router.post("/flows/{flow_id}/runs")
async def start_run(request: Request, flow_id: str) -> dict[str, Any]:
    state = _state(request)
    scenario = state.scenarios.get((PLATFORM, flow_id))
    if scenario is None:
        raise ApiError(404, "Not Found", f"Flow {flow_id} not found")
    async with request.form(max_files=1, max_fields=1) as form:
        document = form.get("document")
        if not isinstance(document, UploadFile) or not document.size:
            raise ApiError(422, "Unprocessable Entity", "document must be a non-empty file")
        try:
            metadata = json.loads(str(form.get("metadata") or "{}"))
        except ValueError:
            raise ApiError(422, "Unprocessable Entity", "metadata must be JSON") from None
        record = {"files": [{"filename": document.filename, "size": document.size}], "metadata": metadata}
    run = EmulatedRun(PLATFORM, new_run_id(), flow_id, scenario, STATUSES, record)
    return run_object(state.add_run(run))


@router.get("/runs/{run_id}")
def get_run(request: Request, run_id: str) -> dict[str, Any]:
    run = _state(request).runs.get(run_id)
    if run is None or run.platform != PLATFORM:
        raise ApiError(404, "Not Found", f"Run {run_id} not found")
    return run_object(run)


@router.get("/runs")
def list_runs(request: Request) -> dict[str, Any]:
    state = _state(request)
    query = request.query_params
    try:
        limit, offset = int(query.get("limit", 50)), int(query.get("cursor", 0))
    except ValueError:
        raise ApiError(422, "Unprocessable Entity", "limit and cursor must be integers") from None
    if not 1 <= limit <= 200 or offset < 0:
        raise ApiError(422, "Unprocessable Entity", "limit must be between 1 and 200")
    runs = state.runs_of(PLATFORM, query.get("flow_id"))
    more = offset + limit < len(runs)
    return {
        "runs": [run_object(run) for run in runs[offset : offset + limit]],
        "next_cursor": str(offset + limit) if more else None,
    }
