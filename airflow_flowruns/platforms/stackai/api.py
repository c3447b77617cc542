"""StackAI: a deployed flow runs synchronously: the run call answers with the outputs once it is done.

There is no call that reads one run and no cancel: a run is followed through the analytics listing.

Unconfirmed wire facts, decided here and nowhere else (see the README's StackAI section):

* The run answer carries ``run_id`` next to ``outputs``. The run is then read from the listing; when the
  listing does not show it yet (analytics may lag), the answer itself stands for a ``COMPLETED`` run.
  Without a ``run_id`` the run is the newest one of the task's ``user_id`` in the listing.
* Each task instance runs as its own ``user_id`` (the task key), so the documents it uploads reach only
  its own runs and a retry can find the run an earlier try started.
* The listing filters server-side on ``state``, ``start_date``/``end_date`` (the creation window) and
  ``user_id``; the window is re-checked client-side (whether the API's bounds are inclusive is not
  documented). The listing order is not documented, so paging stops only on a short page; a server cap
  on ``page_size`` below the one asked for would end paging early, so the extra ``page_size`` (default
  100) can lower it. The polls of one flow's deferred sensors are answered together by one walk of the
  listing per interval (``poll_listing``).
* ``total_tokens`` (a required integer of each listed run) is the run's usage; StackAI reports no credits or
  pages, and a run read from its run answer alone (not listed yet) has no usage.
* ``latency`` is in seconds. The run URL is the run's metadata call,
  ``{base_url}/inference/v0/run/{org_id}/{flow_id}/metadata?run_id=``; the extra ``run_url_template``
  overrides it.
* The OAuth2 password flow posts ``grant_type=password``, ``username``, ``password`` as a form to the
  ``token_url`` extra and reads ``access_token`` and ``expires_in`` (default one hour).
"""

from __future__ import annotations

import json
import math
import mimetypes
import threading
import time
from collections.abc import Generator
from dataclasses import replace
from datetime import datetime
from typing import Any

import httpx
from airflow.providers.common.compat.sdk import mask_secret
from pydantic import BaseModel, ConfigDict, Field

from airflow_flowruns.exceptions import FlowRunsApiError, FlowRunsAuthError, FlowRunsConfigError, FlowRunsResponseError
from airflow_flowruns.platforms.base import (
    Api,
    ApiCall,
    ConnectionSettings,
    FlowRun,
    Platform,
    RunQuery,
    RunsPage,
    RunState,
    map_status,
)
from airflow_flowruns.platforms.stackai import FACTS
from airflow_flowruns.platforms.start import StartRequest, UploadFile
from airflow_flowruns.platforms.usage import Usage
from airflow_flowruns.platforms.values import path_segment

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
USER_ID_INPUT = "user_id"


class AnalyticsRun(BaseModel):
    model_config = ConfigDict(extra="allow")

    run_id: str
    date: datetime | None = None
    state: str
    error: str | None = None
    latency: float | None = None
    total_tokens: int | None = None
    user_id: str | None = None
    outputs: Any = None


class RunAnswer(BaseModel):
    model_config = ConfigDict(extra="allow")

    outputs: dict[str, Any] = Field(default_factory=dict)
    run_id: str | None = None


class OAuth2PasswordAuth(httpx.Auth):
    """Exchanges a login and password for a bearer token, caches it, and renews it when it expires or a
    call answers 401. One generator serves httpx's sync and async clients alike.

    The flow reads the body of its token answers only; of the API call's answer it reads the status. The
    clients drive it through ``hooks.http.auth.bounded_auth``, which reads the token answers within the
    connection's size limit and leaves the API call's answer to be read as every other answer."""

    requires_response_body = True
    call_name = "OAuth token"

    def __init__(self, token_url: str, username: str, password: str) -> None:
        self._token_url = token_url
        self._form = {"grant_type": "password", "username": username, "password": password}
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires = 0.0

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        fresh = self._token is None or time.time() >= self._expires
        if fresh:
            self._store((yield self._token_request(request)))
        request.headers["Authorization"] = f"Bearer {self._token}"
        response = yield request
        if response.status_code == 401 and not fresh:  # revoked early: one new token, one more try
            self._store((yield self._token_request(request)))
            request.headers["Authorization"] = f"Bearer {self._token}"
            yield request

    @property
    def token(self) -> str | None:
        """The bearer token in use, so text from the server can be scrubbed of it."""
        return self._token

    def _token_request(self, request: httpx.Request) -> httpx.Request:
        return httpx.Request("POST", request.url.join(self._token_url), data=self._form)

    def _store(self, response: httpx.Response) -> None:
        """Keep the token, or fail with the status only: a token endpoint's body may echo the form."""
        status = response.status_code
        if status >= 400:
            error = FlowRunsApiError if status == 429 or status >= 500 else FlowRunsAuthError
            raise error(
                platform="StackAI",
                call=self.call_name,
                status=status,
                detail="the token URL refused the connection's login and password",
                retryable=error is FlowRunsApiError,
            )
        try:
            body = response.json()
            token = str(body["access_token"])
            lifetime = float(body.get("expires_in") or 3600)
        except (ValueError, KeyError, TypeError):
            raise FlowRunsResponseError(
                f"StackAI's token URL answered HTTP {status} without an access_token: check the connection's "
                "token_url and host."
            ) from None
        mask_secret(token)
        with self._lock:
            self._token = token
            self._expires = time.time() + lifetime - min(30.0, lifetime / 10)


class StackAI(Platform, facts=FACTS):
    takes_metadata = False
    synchronous = True

    def __init__(self, settings: ConnectionSettings) -> None:
        super().__init__(settings)
        extras = settings.extras
        org_id = extras.get("org_id")
        if not org_id:
            raise FlowRunsConfigError(
                f"Connection {settings.conn_id!r} has no org_id: set the StackAI organization id in its extras."
            )
        self.org_id = str(org_id)
        self.run_timeout = self._positive_extra("run_timeout", DEFAULT_RUN_TIMEOUT)
        self.page_size = int(self._positive_extra("page_size", PAGE_SIZE))
        token_url = extras.get("token_url")
        self._auth = OAuth2PasswordAuth(str(token_url), settings.login, settings.api_key) if settings.login else None

    def check_credentials(self) -> None:
        conn_id = self.settings.conn_id
        if bool(self.settings.login) != bool(self.settings.extras.get("token_url")):
            raise FlowRunsConfigError(
                f"Connection {conn_id!r}: the OAuth2 password flow needs both a login and the extra token_url; "
                "to use an API key instead, leave both empty."
            )
        if not self.settings.api_key:
            raise FlowRunsConfigError(
                f"Connection {conn_id!r} has no API key: put the StackAI API key (or, with a login and token_url, "
                "the OAuth password) in its password field."
            )

    def _positive_extra(self, name: str, default: float) -> float:
        value = self.settings.extras.get(name)
        if value is None or value == "":
            return default
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number) or number <= 0:
            raise FlowRunsConfigError(
                f"Connection {self.settings.conn_id!r}: extra {name!r} must be a positive number, not {value!r}."
            )
        return number

    def headers(self) -> dict[str, str]:
        return {} if self._auth else {"Authorization": f"Bearer {self.settings.api_key}"}

    def auth(self) -> httpx.Auth | None:
        return self._auth

    def secrets(self) -> list[str]:
        """The key (or OAuth password) and, once issued, the OAuth token."""
        token = self._auth.token if self._auth else None
        return [*super().secrets(), *([token] if token else [])]

    def test_call(self) -> ApiCall:
        flow_id = self.settings.extras.get("flow_id")
        if not flow_id:
            raise FlowRunsConfigError(
                "StackAI has no call to list flows: set the extra flow_id to a deployed flow to test the connection."
            )
        flow = str(flow_id)
        return ApiCall(
            "list runs", "GET", self._runs_path(flow), params={"page": 0, "page_size": 1}, ids=self._ids(flow)
        )

    def get_run_call(self, flow_id: str | None, run_id: str) -> None:
        return None

    def run_lookup(self, flow_id: str | None, run_id: str) -> RunQuery:
        if not flow_id:
            raise FlowRunsConfigError("StackAI runs are found under their flow: set flow_id on the task.")
        return RunQuery(flow_id=flow_id, run_id=run_id)

    def parse_run(self, body: Any, flow_id: str | None = None) -> FlowRun:
        run = self.parse_model(AnalyticsRun, body, "run")
        state = map_status(self.label, run.state, STATUSES)
        return FlowRun(
            id=run.run_id,
            flow_id=flow_id,
            platform=self.name,
            state=state,
            status=run.state,
            error=(run.error or "StackAI reported the run as failed without a reason.")
            if state is RunState.FAILED
            else None,
            url=self._run_url(flow_id, run.run_id),
            metadata={USER_ID_INPUT: run.user_id} if run.user_id else {},
            created_at=run.date,
            duration_ms=int(run.latency * 1000) if run.latency is not None and state.is_final else None,
            usage=Usage.reported(tokens=run.total_tokens),
            raw=body,
            outputs=_decoded(run.outputs),
        )

    def task_key_of(self, run: FlowRun) -> str | None:
        return run.metadata.get(USER_ID_INPUT)

    def list_runs_call(self, query: RunQuery) -> ApiCall:
        if not query.flow_id:
            raise FlowRunsConfigError("StackAI lists runs per flow: give flow_id.")
        params: dict[str, Any] = {"page": 0, "page_size": query.page_size or self.page_size}
        if query.states:
            params["state"] = ",".join(raw for raw, state in STATUSES.items() if state in query.states)
        if query.created_after:
            params["start_date"] = query.created_after.isoformat()
        if query.created_before:
            params["end_date"] = query.created_before.isoformat()
        if query.user_id:
            params["user_id"] = query.user_id
        return ApiCall("list runs", "GET", self._runs_path(query.flow_id), params=params, ids=self._ids(query.flow_id))

    @classmethod
    def poll_listing(cls, flow_id: str | None) -> RunQuery | None:
        """The analytics listing is the only way to read a run, and its items are whole runs: the polls of
        one flow's sensors share one walk of it per interval instead of one walk each."""
        return RunQuery(flow_id=flow_id) if flow_id else None

    def parse_runs_page(self, body: Any, call: ApiCall, query: RunQuery) -> RunsPage:
        if not isinstance(body, list):
            raise FlowRunsResponseError("StackAI's run listing is not a JSON array; check the connection's host.")
        wanted = query.run_ids
        runs = [
            self.parse_run(item, query.flow_id)
            for item in body
            if wanted is None or not isinstance(item, dict) or item.get("run_id") in wanted
        ]
        params = dict(call.params or {})
        if len(body) < params["page_size"]:
            return RunsPage(runs, None)
        return RunsPage(runs, replace(call, params={**params, "page": params["page"] + 1}))

    def start_run(self, api: Api, request: StartRequest) -> FlowRun:
        self.refuse_unsupported(request, "run_name", "metadata", "file_metadata", "file_guidance", "flow_version")
        if not request.task_key:
            raise FlowRunsConfigError("A StackAI run needs the task key as its user_id; start it from FlowRunOperator.")
        if USER_ID_INPUT in request.inputs:
            raise FlowRunsConfigError(
                "inputs must not set user_id: the operator sets it per task instance, so the run reads the "
                "documents this task uploads and a retry finds its run."
            )
        bad_nodes = [node for node in request.files if not node or "/" in node]
        if bad_nodes:
            raise FlowRunsConfigError(f"files keys must be document node ids such as 'doc-0', not {bad_nodes!r}.")
        user_id = request.task_key
        for node_id, path in request.iter_files():
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            api.call(
                ApiCall(
                    "upload document",
                    "POST",
                    f"/documents/{path_segment(self.org_id, 'org_id')}/{path_segment(request.flow_id, 'flow_id')}/"
                    f"{path_segment(node_id, 'node id')}/{path_segment(user_id, 'user id')}",
                    files=[UploadFile("file", path, content_type)],
                    ids={**self._ids(request.flow_id), "document node id": node_id},
                )
            )
        call = ApiCall(
            "run flow",
            "POST",
            f"/inference/v0/run/{path_segment(self.org_id, 'org_id')}/{path_segment(request.flow_id, 'flow_id')}",
            json={**request.inputs, USER_ID_INPUT: user_id},
            idempotent=False,
            timeout=self.run_timeout,
            ids=self._ids(request.flow_id),
        )
        answer = self.parse_model(RunAnswer, api.call(call), "run answer")
        lookup = RunQuery(flow_id=request.flow_id, run_id=answer.run_id, user_id=user_id)
        listing = self.list_runs_call(lookup)
        page = self.parse_runs_page(api.call(listing), listing, lookup)
        run = next(filter(lookup.matches, page.runs), None)
        if run is not None:
            return run.model_copy(update={"outputs": answer.outputs})
        if answer.run_id is None:
            raise FlowRunsResponseError(
                f"StackAI ran flow {request.flow_id!r} but named no run_id, and its run is not in the flow's run "
                "listing yet."
            )
        return FlowRun(
            id=answer.run_id,
            flow_id=request.flow_id,
            platform=self.name,
            state=RunState.SUCCEEDED,
            status="COMPLETED",
            url=self._run_url(request.flow_id, answer.run_id),
            metadata={USER_ID_INPUT: user_id},
            outputs=answer.outputs,
        )

    def _runs_path(self, flow_id: str) -> str:
        return f"/analytics/org/{path_segment(self.org_id, 'org_id')}/flows/{path_segment(flow_id, 'flow_id')}"

    def _ids(self, flow_id: str) -> dict[str, str]:
        """The ids every StackAI path names: the extra ``org_id`` and the flow's."""
        return {"org_id": self.org_id, "flow id": flow_id}

    def _run_url(self, flow_id: str | None, run_id: str) -> str:
        template = self.settings.extras.get("run_url_template") or DEFAULT_RUN_URL_TEMPLATE
        return str(template).format(base_url=self.settings.base_url, org_id=self.org_id, flow_id=flow_id, run_id=run_id)


def _decoded(value: Any) -> Any:
    """The listing carries outputs as a JSON-encoded string."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


PLATFORM = StackAI
