"""The control API under ``/_emulator``: what tests and the demo use to watch and steer the emulator.

Every input is bounded, so a mistyped or hostile request cannot make the emulator allocate without limit.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from airflow_flowruns.emulator.config import Scenario
from airflow_flowruns.emulator.discovery import discovery
from airflow_flowruns.emulator.errors import ApiError
from airflow_flowruns.emulator.faults import FaultKind, FaultMode
from airflow_flowruns.emulator.state import EmulatedRun, EmulatorState, Fault

router = APIRouter(prefix="/_emulator")


MAX_TEXT = 64 * 1024
MAX_SEEDED_RUNS = 100_000


class ForcedStatus(BaseModel):
    status: str = Field(max_length=200)
    error: str | None = Field(None, max_length=MAX_TEXT)
    message: str | None = Field(None, max_length=MAX_TEXT)


class FaultSpec(BaseModel):
    path: str = Field(max_length=2000)
    status: int = Field(ge=0, le=599)
    """0 with a ``kind`` whose answer has no status of its own (drop, stall)."""
    body: str = Field("", max_length=16 * 1024 * 1024)
    method: str | None = Field(None, max_length=16)
    content_type: str = Field("application/json", max_length=200)
    headers: dict[str, str] = Field({}, max_length=50)
    count: int = Field(1, ge=1, le=100_000)
    kind: FaultKind | None = None


def _state(request: Request) -> EmulatorState:
    return request.app.state.emulator


@router.get("/discovery")
def discover(request: Request) -> dict[str, Any]:
    """Each platform's connection to this emulator, at the address the caller reached, and its flows."""
    return discovery(request.app.state.config, str(request.base_url).rstrip("/"))


@router.get("/requests")
def requests(request: Request) -> list[dict[str, Any]]:
    with _state(request).lock:
        return list(_state(request).requests)


@router.delete("/requests")
def clear_requests(request: Request) -> None:
    with _state(request).lock:
        _state(request).requests.clear()


@router.get("/runs")
def runs(request: Request) -> list[dict[str, Any]]:
    with _state(request).lock:
        found = list(_state(request).runs.values())
    return [run.summary() for run in found]


@router.post("/runs/{run_id}/status")
def force_status(request: Request, run_id: str, body: ForcedStatus) -> dict[str, Any]:
    state = _state(request)
    with state.lock:
        run = state.runs.get(run_id)
        if run is None:
            raise ApiError(404, "Not Found", f"Run {run_id} not found")
        run.force(body.status, error=body.error, message=body.message)
    return run.summary()


@router.put("/{platform}/flows/{flow_id}/scenario")
def set_scenario(request: Request, platform: str, flow_id: str, scenario: Scenario) -> Scenario:
    state = _state(request)
    with state.lock:
        if (platform, flow_id) not in state.scenarios:
            raise ApiError(404, "Not Found", f"No {platform} flow {flow_id} is configured")
        state.scenarios[(platform, flow_id)] = scenario
    return scenario


class Seed(BaseModel):
    """Runs made without uploads, e.g. 10,000 for paging tests or benchmarks; created times spread evenly."""

    platform: str
    flow_id: str
    count: int = Field(1, ge=0, le=MAX_SEEDED_RUNS)
    created_from: float | None = Field(None, allow_inf_nan=False)
    created_to: float | None = Field(None, allow_inf_nan=False)
    scenario: Scenario | None = None
    metadata: dict[str, Any] = {}


@router.post("/seed")
def seed(request: Request, body: Seed) -> dict[str, list[str]]:
    state = _state(request)
    module = request.app.state.platforms.get(body.platform)
    scenario = body.scenario or state.scenarios.get((body.platform, body.flow_id))
    if module is None or scenario is None:
        raise ApiError(404, "Not Found", f"No {body.platform} flow {body.flow_id} is configured")
    now = time.time()
    start = now if body.created_from is None else body.created_from
    end = start if body.created_to is None else body.created_to
    step = (end - start) / body.count if body.count else 0.0
    runs = [
        EmulatedRun(
            body.platform,
            module.new_run_id(),
            body.flow_id,
            scenario,
            module.STATUSES,
            {"metadata": dict(body.metadata), "seeded": True},
            created=start + i * step,
        )
        for i in range(body.count)
    ]
    with state.lock:
        state.runs.update((run.id, run) for run in runs)
    return {"ids": [run.id for run in runs]}


@router.get("/stats")
def stats(request: Request) -> dict[str, Any]:
    state = _state(request)
    with state.lock:
        return {
            "requests": state.request_count,
            "connections": len(state.connections),
            "runs": len(state.runs),
            "faults": dict(state.injector.counts),
            "rate_limited": state.buckets.limited,
        }


class RateLimit(BaseModel):
    per_second: float | None = Field(None, gt=0, le=1_000_000, allow_inf_nan=False)


@router.put("/rate-limit")
def set_rate_limit(request: Request, body: RateLimit) -> RateLimit:
    _state(request).buckets.set_rate(body.per_second)
    return body


@router.put("/fault-mode")
def set_fault_mode(request: Request, mode: FaultMode) -> FaultMode:
    _state(request).injector.set_mode(mode)
    return mode


@router.post("/faults")
def add_fault(request: Request, spec: FaultSpec) -> None:
    with _state(request).lock:
        _state(request).faults.append(Fault(**spec.model_dump()))


@router.delete("/faults")
def clear_faults(request: Request) -> None:
    with _state(request).lock:
        _state(request).faults.clear()


@router.post("/reset")
def reset(request: Request) -> None:
    _state(request).reset()


class ManualRuns(BaseModel):
    """Runs started as a person starts them, in the platform's own app: no API call, no Airflow task key."""

    count: int = 1


@router.post("/{platform}/flows/{flow_id}/manual-runs")
def start_manual_runs(request: Request, platform: str, flow_id: str, body: ManualRuns) -> dict[str, list[str]]:
    state = _state(request)
    module = request.app.state.platforms.get(platform)
    scenario = state.scenarios.get((platform, flow_id))
    if module is None or scenario is None:
        raise ApiError(404, "Not Found", f"No {platform} flow {flow_id} is configured")
    runs = [
        EmulatedRun(platform, module.new_run_id(), flow_id, scenario, module.STATUSES, {"trigger_method": "manual"})
        for _ in range(body.count)
    ]
    with state.lock:
        state.runs.update((run.id, run) for run in runs)
    return {"ids": [run.id for run in runs]}
