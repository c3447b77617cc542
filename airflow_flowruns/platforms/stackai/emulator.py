"""StackAI routes: synchronous runs, document uploads, the analytics listing, and an OAuth token endpoint."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from airflow_flowruns.emulator.config import EmulatorConfig, Scenario
from airflow_flowruns.emulator.errors import ApiError
from airflow_flowruns.emulator.served import ServedField, ServedFlow, ServedPlatform, outcome_of
from airflow_flowruns.emulator.state import EmulatedRun, EmulatorState

STACKAI_ORG = "org_emulator"
STACKAI_FLOW = "flow_contract_review"
STACKAI_BIG_OUTPUT_FLOW = "flow_long_report"
STACKAI_FAILING_FLOW = "flow_failing"
BUILT_IN_OAUTH_USERS = {"analyst": "analyst-password"}
"""The OAuth user the emulator knows unless a configuration names its own: a fixed test login."""


class StackAIFlow(BaseModel):
    id: str
    name: str
    document_nodes: list[str] = Field(default_factory=lambda: ["doc-0"])
    output_bytes: int = 0
    """Padding added to the outputs, to exercise outputs too large for XCom."""
    scenario: Scenario = Field(default_factory=lambda: Scenario(processing_seconds=0.2))


def _default_stackai_flows() -> list[StackAIFlow]:
    return [
        StackAIFlow(id=STACKAI_FLOW, name="Contract review"),
        StackAIFlow(id=STACKAI_BIG_OUTPUT_FLOW, name="Long report", output_bytes=200_000),
        StackAIFlow(
            id=STACKAI_FAILING_FLOW,
            name="Always fails",
            scenario=Scenario(processing_seconds=0.1, outcome="failed", error="LLM node out-0 timed out"),
        ),
    ]


class StackAIConfig(BaseModel):
    org_id: str = STACKAI_ORG
    flows: list[StackAIFlow] = Field(default_factory=_default_stackai_flows)
    oauth_users: dict[str, str] = Field(default_factory=lambda: dict(BUILT_IN_OAUTH_USERS))
    token_ttl_seconds: float = 3600.0


PLATFORM = "stackai"
PATH_PREFIXES = ("/inference/", "/documents/", "/analytics/", "/oauth/")
STATUSES = {"queued": "PENDING", "running": "RESUMED", "review": "PAUSED", "completed": "COMPLETED", "failed": "FAILED"}
TOKEN_PATH = "/oauth/token"

router = APIRouter()


def error_body(error: ApiError) -> dict[str, Any]:
    if error.status == 422:
        return {"detail": [{"loc": error.fields.get("loc", ["body"]), "msg": error.message, "type": "value_error"}]}
    return {"detail": error.message}


def settings(config: EmulatorConfig) -> StackAIConfig:
    """This platform's section of the emulator's configuration."""
    return config.platform(PLATFORM, StackAIConfig)


def scenarios(config: EmulatorConfig) -> list[tuple[str, Scenario]]:
    return [(flow.id, flow.scenario) for flow in settings(config).flows]


def served(config: EmulatorConfig) -> ServedPlatform:
    """The organization and flows served, for the emulator's discovery call and start-up banner."""
    stackai = settings(config)
    users = ", ".join(
        f"{user} / {password}" if BUILT_IN_OAUTH_USERS.get(user) == password else user
        for user, password in stackai.oauth_users.items()
    )
    return ServedPlatform(
        flows=[
            ServedFlow(
                id=flow.id,
                name=flow.name,
                files=[ServedField(name=node, required=False, about="document node") for node in flow.document_nodes],
                inputs=[ServedField(name="in-0", required=False, about="or any other input node id")],
                outcome=outcome_of(flow.scenario)
                + (f", with about {flow.output_bytes // 1000} KB of outputs" if flow.output_bytes else ""),
            )
            for flow in stackai.flows
        ],
        extra={"org_id": stackai.org_id, **({"flow_id": stackai.flows[0].id} if stackai.flows else {})},
        notes=[
            "Runs are synchronous: the task waits in the worker for the run call's answer (extra run_timeout).",
            "The connection's flow_id is the flow its Test button lists runs of; each task names its own.",
            f"OAuth2 instead of a key: login and password of a user ({users}) and the extra token_url {TOKEN_PATH}.",
        ],
    )


def new_run_id() -> str:
    return str(uuid.uuid4())


def _state(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    token = request.headers.get("authorization", "").removeprefix("Bearer ")
    with state.lock:
        oauth_ok = state.tokens.get(token, 0) > time.time()
    if not (token in request.app.state.config.api_keys or oauth_ok):
        raise ApiError(401, "Unauthorized", "Invalid or expired credentials")
    return state


def _flow(request: Request, org_id: str, flow_id: str) -> StackAIFlow:
    config = settings(request.app.state.config)
    flow = next((f for f in config.flows if f.id == flow_id), None)
    if org_id != config.org_id or flow is None:
        raise ApiError(404, "Not Found", f"Flow {flow_id} not found in organization {org_id}")
    return flow


def _outputs(flow: StackAIFlow, run: EmulatedRun) -> dict[str, Any]:
    docs = run.record.get("documents", [])
    text = f"Reviewed {len(docs)} document(s) with inputs {json.dumps(run.record.get('inputs', {}), sort_keys=True)}"
    return {"out-0": text + " " + "." * flow.output_bytes}


def item(run: EmulatedRun, outputs: dict[str, Any] | None) -> dict[str, Any]:
    history = run.history()
    status = history[-1].status
    return {
        "run_id": run.id,
        "conversation_id": run.id,
        "date": datetime.fromtimestamp(run.created, UTC).isoformat(),
        "is_flow_successful": status == "COMPLETED",
        "state": status,
        "error": run.error if status == "FAILED" else None,
        "latency": round(history[-1].time - run.created, 3),
        "total_tokens": 42,
        "user_id": run.record.get("user_id"),
        "inputs": json.dumps(run.record.get("inputs", {})),
        "outputs": json.dumps(outputs) if outputs is not None else None,
        "llms": json.dumps(["gpt-emulated"]),
        "feedback": json.dumps(None),
        "run_type": None,  # the reference page lists the enum without its values: none is made up
        "ran_by_type": None,
        "ran_by_id": None,
        "ran_by_display_name": None,
        "parent_run_id": None,
        "parent_project_id": None,
        "parent_project_name": None,
    }


@router.post(TOKEN_PATH)
async def token(request: Request) -> dict[str, Any]:
    form = await request.form()
    config = settings(request.app.state.config)
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    if form.get("grant_type") != "password" or config.oauth_users.get(username) != password:
        raise ApiError(401, "Unauthorized", "Invalid username or password")
    access = secrets.token_urlsafe(24)
    state: EmulatorState = request.app.state.emulator
    with state.lock:
        state.tokens[access] = time.time() + config.token_ttl_seconds
    return {"access_token": access, "token_type": "bearer", "expires_in": config.token_ttl_seconds}


@router.post("/documents/{org_id}/{flow_id}/{node_id}/{user_id}")
async def upload_document(request: Request, org_id: str, flow_id: str, node_id: str, user_id: str) -> dict[str, Any]:
    state = _state(request)
    flow = _flow(request, org_id, flow_id)
    if node_id not in flow.document_nodes:
        raise ApiError(
            422, "Unprocessable Entity", f"{node_id} is not a document node of flow {flow_id}", loc=["path", "node_id"]
        )
    async with request.form(max_files=1, max_fields=1) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "Unprocessable Entity", "Field required", loc=["body", "file"])
        document = {"field": node_id, "filename": upload.filename, "size": upload.size}
    with state.lock:
        state.uploads.setdefault(f"{flow_id}/{user_id}", {"documents": []})["documents"].append(document)
    return {"success": True, "node_id": node_id, "file_name": document["filename"]}


@router.post("/inference/v0/run/{org_id}/{flow_id}")
async def run_flow(request: Request, org_id: str, flow_id: str) -> dict[str, Any]:
    state = _state(request)
    flow = _flow(request, org_id, flow_id)
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(422, "Unprocessable Entity", "JSON decode error") from None
    if not isinstance(body, dict):
        raise ApiError(422, "Unprocessable Entity", "Input should be a valid dictionary")
    user_id = body.get("user_id")
    inputs = {key: value for key, value in body.items() if key != "user_id"}
    with state.lock:
        documents = list(state.uploads.get(f"{flow_id}/{user_id}", {}).get("documents", []))
    scenario = state.scenarios[(PLATFORM, flow.id)]
    record = {"user_id": user_id, "inputs": inputs, "documents": documents}
    run = state.add_run(EmulatedRun(PLATFORM, new_run_id(), flow.id, scenario, STATUSES, record))
    await asyncio.sleep(scenario.processing_seconds)
    if scenario.outcome == "failed":
        with state.lock:
            run.force("FAILED", error=scenario.error or "Flow failed", message=scenario.error)
        raise ApiError(500, "Internal Server Error", scenario.error or "Flow failed")
    outputs = _outputs(flow, run)
    with state.lock:
        run.record["outputs"] = outputs
        run.force("COMPLETED", message="Completed")
    return {"run_id": run.id, "outputs": outputs}


@router.get("/inference/v0/run/{org_id}/{flow_id}/metadata")
def run_metadata(request: Request, org_id: str, flow_id: str) -> dict[str, Any]:
    state = _state(request)
    _flow(request, org_id, flow_id)
    run = state.runs.get(request.query_params.get("run_id", ""))
    if run is None or run.platform != PLATFORM:
        raise ApiError(404, "Not Found", "Run not found")
    return item(run, run.record.get("outputs"))


@router.get("/analytics/org/{org_id}/flows/{flow_id}")
def list_runs(request: Request, org_id: str, flow_id: str) -> list[dict[str, Any]]:
    state = _state(request)
    _flow(request, org_id, flow_id)
    query = request.query_params
    try:
        page, size = int(query.get("page", 0)), int(query.get("page_size", 25))
        start = datetime.fromisoformat(query["start_date"]).timestamp() if query.get("start_date") else None
        end = datetime.fromisoformat(query["end_date"]).timestamp() if query.get("end_date") else None
    except ValueError:
        raise ApiError(422, "Unprocessable Entity", "Invalid query parameter", loc=["query"]) from None
    if page < 0 or size < 1:
        raise ApiError(422, "Unprocessable Entity", "page must be >= 0 and page_size >= 1", loc=["query"])
    states = set(query["state"].split(",")) if query.get("state") else None
    runs = [
        run
        for run in state.runs_of(PLATFORM, flow_id)
        if (states is None or run.status in states)
        and (start is None or run.created >= start)
        and (end is None or run.created < end)
        and query.get("user_id") in (None, run.record.get("user_id"))
    ]
    return [item(run, run.record.get("outputs")) for run in runs[page * size : (page + 1) * size]]
