"""StackAI: a deployed flow runs synchronously: the run call answers with the outputs once it is done.

There is no call that reads one run and no cancel: a run is followed through the analytics listing.

Unconfirmed wire facts, decided here and nowhere else (see the README's StackAI section):

* The run answer carries ``run_id`` next to ``outputs``; when it does not, the run is the newest one of
  the task's ``user_id`` in the listing.
* Each task instance runs as its own ``user_id`` (the task key), so the documents it uploads reach only
  its own runs and a retry can find the run an earlier try started.
* ``start_date``/``end_date`` are sent for the creation window and the window is re-checked client-side
  (whether the API's bounds are inclusive is not documented); the listing order is not documented, so
  paging stops only on a short page.
* The run URL is the run's metadata call, ``{base_url}/inference/v0/run/{org_id}/{flow_id}/metadata?run_id=``;
  the connection extra ``run_url_template`` overrides it.
* The OAuth2 password flow posts ``grant_type=password``, ``username``, ``password`` as a form to the
  ``token_url`` extra and reads ``access_token`` and ``expires_in`` (default one hour).
"""

from __future__ import annotations

import json
import mimetypes
import threading
import time
from collections.abc import Generator
from dataclasses import replace
from datetime import datetime
from typing import Any

import httpx
from airflow.sdk.log import mask_secret
from pydantic import BaseModel, ConfigDict, Field

from airflow_flowruns.exceptions import FlowRunsConfigError, FlowRunsResponseError
from airflow_flowruns.platforms.base import (
    Api,
    ApiCall,
    ConnectionSettings,
    FlowRun,
    Platform,
    RunQuery,
    RunsPage,
    RunState,
    StartRequest,
    UploadFile,
    map_status,
)

STATUSES: dict[str, RunState] = {
    "PENDING": RunState.QUEUED,
    "RESUMED": RunState.RUNNING,
    "PAUSED": RunState.NEEDS_REVIEW,
    "COMPLETED": RunState.SUCCEEDED,
    "FAILED": RunState.FAILED,
    "CANCELLED": RunState.CANCELLED,
}

DEFAULT_RUN_URL_TEMPLATE = "{base_url}/inference/v0/run/{org_id}/{flow_id}/metadata?run_id={run_id}"
DEFAULT_RUN_TIMEOUT = 600.0
PAGE_SIZE = 100


class AnalyticsRun(BaseModel):
    model_config = ConfigDict(extra="allow")

    run_id: str
    date: datetime | None = None
    state: str
    error: str | None = None
    latency: float | None = None
    user_id: str | None = None
    outputs: Any = None


class RunAnswer(BaseModel):
    model_config = ConfigDict(extra="allow")

    outputs: dict[str, Any] = Field(default_factory=dict)
    run_id: str | None = None


class OAuth2PasswordAuth(httpx.Auth):
    """Exchanges a login and password for a bearer token, caches it, and renews it when it expires or a
    call answers 401. One generator serves httpx's sync and async clients alike."""

    requires_response_body = True

    def __init__(self, token_url: str, username: str, password: str) -> None:
        self._token_url = token_url
        self._form = {"grant_type": "password", "username": username, "password": password}
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires = 0.0

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._token is None or time.time() >= self._expires:
            self._store((yield self._token_request(request)))
        request.headers["Authorization"] = f"Bearer {self._token}"
        response = yield request
        if response.status_code == 401:
            self._store((yield self._token_request(request)))
            request.headers["Authorization"] = f"Bearer {self._token}"
            yield request

    def _token_request(self, request: httpx.Request) -> httpx.Request:
        return httpx.Request("POST", request.url.join(self._token_url), data=self._form)

    def _store(self, response: httpx.Response) -> None:
        try:
            body = response.json()
            token = str(body["access_token"])
        except (ValueError, KeyError, TypeError):
            raise FlowRunsResponseError(
                f"StackAI's token URL answered HTTP {response.status_code} without an access_token: check the "
                "connection's login, password and token_url."
            ) from None
        mask_secret(token)
        with self._lock:
            self._token = token
            self._expires = time.time() + float(body.get("expires_in") or 3600) - 30


class StackAI(Platform):
    name = "stackai"
    label = "StackAI"
    default_base_url = "https://api.stack-ai.com"
    synchronous = True

    def __init__(self, settings: ConnectionSettings) -> None:
        super().__init__(settings)
        org_id = settings.extras.get("org_id")
        if not org_id:
            raise FlowRunsConfigError(
                f"Connection {settings.conn_id!r} has no org_id: set the StackAI organization id in its extras."
            )
        self.org_id = str(org_id)
        token_url = settings.extras.get("token_url")
        self._auth = (
            OAuth2PasswordAuth(str(token_url), settings.login, settings.api_key)
            if settings.login and token_url
            else None
        )

    def headers(self) -> dict[str, str]:
        return {} if self._auth else {"Authorization": f"Bearer {self.settings.api_key}"}

    def auth(self) -> httpx.Auth | None:
        return self._auth

    def test_call(self) -> ApiCall:
        flow_id = self.settings.extras.get("flow_id")
        if not flow_id:
            raise FlowRunsConfigError(
                "StackAI has no call to list flows: set the extra flow_id to a deployed flow to test the connection."
            )
        return ApiCall("list runs", "GET", self._runs_path(str(flow_id)), params={"page": 0, "page_size": 1})

    def get_run_call(self, flow_id: str | None, run_id: str) -> None:
        return None

    def run_lookup(self, flow_id: str | None, run_id: str) -> RunQuery:
        if not flow_id:
            raise FlowRunsConfigError("StackAI runs are found under their flow: set flow_id on the task.")
        return RunQuery(flow_id=flow_id, run_id=run_id)

    def parse_run(self, body: Any, flow_id: str | None = None) -> FlowRun:
        run = self.parse_model(AnalyticsRun, body, "run")
        state = map_status(self.label, run.state, STATUSES)
        template = self.settings.extras.get("run_url_template") or DEFAULT_RUN_URL_TEMPLATE
        url = template.format(base_url=self.settings.base_url, org_id=self.org_id, flow_id=flow_id, run_id=run.run_id)
        return FlowRun(
            id=run.run_id,
            flow_id=flow_id,
            platform=self.name,
            state=state,
            status=run.state,
            error=(run.error or "StackAI reported the run as failed without a reason.")
            if state is RunState.FAILED
            else None,
            url=url,
            metadata={"user_id": run.user_id} if run.user_id else {},
            created_at=run.date,
            duration_ms=int(run.latency * 1000) if run.latency is not None and state.is_final else None,
            raw=body,
            outputs=_decoded(run.outputs),
        )

    def task_key_of(self, run: FlowRun) -> str | None:
        return run.metadata.get("user_id")

    def list_runs_call(self, query: RunQuery) -> ApiCall:
        if not query.flow_id:
            raise FlowRunsConfigError("StackAI lists runs per flow: give flow_id.")
        params: dict[str, Any] = {"page": 0, "page_size": query.page_size or PAGE_SIZE}
        if query.states:
            params["state"] = ",".join(raw for raw, state in STATUSES.items() if state in query.states)
        if query.created_after:
            params["start_date"] = query.created_after.isoformat()
        if query.created_before:
            params["end_date"] = query.created_before.isoformat()
        if query.user_id:
            params["user_id"] = query.user_id
        return ApiCall("list runs", "GET", self._runs_path(query.flow_id), params=params)

    def parse_runs_page(self, body: Any, call: ApiCall, query: RunQuery) -> RunsPage:
        if not isinstance(body, list):
            raise FlowRunsResponseError("StackAI's run listing is not a JSON array; check the connection's host.")
        runs = [self.parse_run(item, query.flow_id) for item in body]
        params = dict(call.params or {})
        if len(runs) < params["page_size"]:
            return RunsPage(runs, None)
        return RunsPage(runs, replace(call, params={**params, "page": params["page"] + 1}))

    def start_run(self, api: Api, request: StartRequest) -> FlowRun:
        self.refuse_unsupported(request, "run_name", "metadata", "file_metadata", "file_guidance", "flow_version")
        if not request.task_key:
            raise FlowRunsConfigError("A StackAI run needs the task key as its user_id; start it from FlowRunOperator.")
        user_id = request.task_key
        for node_id, path in request.iter_files():
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            api.call(
                ApiCall(
                    "upload document",
                    "POST",
                    f"/documents/{self.org_id}/{request.flow_id}/{node_id}/{user_id}",
                    files=[UploadFile("file", path, content_type)],
                )
            )
        timeout = float(self.settings.extras.get("run_timeout") or DEFAULT_RUN_TIMEOUT)
        call = ApiCall(
            "run flow",
            "POST",
            f"/inference/v0/run/{self.org_id}/{request.flow_id}",
            json={**request.inputs, "user_id": user_id},
            idempotent=False,
            timeout=timeout,
        )
        answer = self.parse_model(RunAnswer, api.call(call), "run answer")
        lookup = RunQuery(flow_id=request.flow_id, run_id=answer.run_id, user_id=user_id)
        listing = self.list_runs_call(lookup)
        run = next(
            (r for r in self.parse_runs_page(api.call(listing), listing, lookup).runs if lookup.matches(r)), None
        )
        if run is None:
            raise FlowRunsResponseError(
                f"StackAI ran flow {request.flow_id!r} but its run is not in the flow's run listing yet."
            )
        return run.model_copy(update={"outputs": answer.outputs})

    def _runs_path(self, flow_id: str) -> str:
        return f"/analytics/org/{self.org_id}/flows/{flow_id}"


def _decoded(value: Any) -> Any:
    """The listing carries outputs as a JSON-encoded string."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
