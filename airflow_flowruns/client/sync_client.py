"""The blocking client, for workers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
from tenacity import Retrying

from airflow_flowruns.client.auth import bounded_auth
from airflow_flowruns.client.body import ACCEPT_ENCODING, Answer, build_request, seconds_for
from airflow_flowruns.client.deadline import request_deadline, start_deadline, sync_transport
from airflow_flowruns.client.errors import (
    found,
    reading_body,
    the_run_asked_for,
    translated_errors,
)
from airflow_flowruns.client.options import KEEPALIVE_SECONDS, HttpOptions
from airflow_flowruns.client.proxies import proxy_mounts
from airflow_flowruns.client.ratelimit import scheduler_for
from airflow_flowruns.client.retry import decode_and_pace, retry_policy
from airflow_flowruns.files import OpenWhileRead
from airflow_flowruns.platforms.base import ApiCall, FlowRun, Platform, RunQuery


class FlowRunsClient:
    """Blocking client for workers: uploads stream from disk, so memory does not grow with file size.

    Each request has an overall deadline (the call's or the connection's ``timeout``), directly or through
    a proxy the environment names; an upload's starts once its body is sent, since sending a large file
    takes as long as it takes.
    """

    def __init__(self, platform: Platform, options: HttpOptions) -> None:
        self.platform = platform
        self.options = options
        self._scheduler = scheduler_for(platform.settings.conn_id, options.max_requests_per_second)
        transport = {"verify": options.ssl_context(), "limits": httpx.Limits(keepalive_expiry=KEEPALIVE_SECONDS)}
        self._http = httpx.Client(
            base_url=platform.settings.base_url,
            headers={**platform.headers(), "Accept-Encoding": ACCEPT_ENCODING},
            auth=bounded_auth(platform, options.max_response_bytes),
            timeout=options.timeout,
            transport=sync_transport(**transport),
            mounts=proxy_mounts(lambda proxy: sync_transport(proxy=proxy, **transport)),
        )

    def call(self, call: ApiCall) -> Any:
        with translated_errors(self.platform, call):
            for attempt in Retrying(**retry_policy(self.platform, self.options, call)):
                with attempt:
                    return self._send(call)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def get_run(self, flow_id: str | None, run_id: str) -> FlowRun:
        call = self.platform.get_run_call(flow_id, run_id)
        if call is None:
            return found(self.platform, run_id, next(self.iter_runs(self.platform.run_lookup(flow_id, run_id)), None))
        body = self.call(call)
        with translated_errors(self.platform, call):
            return the_run_asked_for(self.platform, call, self.platform.parse_run(body, flow_id), flow_id, run_id)

    def iter_runs(self, query: RunQuery) -> Iterator[FlowRun]:
        """Walk the listing lazily: one request per page, one page in memory at a time."""
        call: ApiCall | None = self.platform.list_runs_call(query)
        while call is not None:
            body = self.call(call)
            with translated_errors(self.platform, call):
                page = self.platform.parse_runs_page(body, call, query)
            yield from filter(query.matches, page.runs)
            call = page.next_call

    def _send(self, call: ApiCall) -> Any:
        seconds = seconds_for(call, self.options.timeout)
        parts: list[tuple[str, tuple[str, Any, str]]] = [
            (part.field, (part.filename, OpenWhileRead(part.path), part.content_type)) for part in call.files
        ]
        self._scheduler.wait()
        request = build_request(
            self._http,
            call,
            seconds,
            files=parts or None,
            extensions={"trace": _deadline_from_answer(seconds)} if parts else None,
        )
        with ExitStack() as opened, request_deadline(None if parts else seconds):
            for _, (_, file, _) in parts:
                opened.callback(file.close)
            response = self._http.send(request, stream=True)
            try:
                with reading_body(self.platform, call.name, response.headers, self.options.max_response_bytes) as body:
                    for chunk in response.iter_raw():
                        body.feed(chunk)
                    answer = Answer(response.status_code, response.headers, body.finish())
            finally:
                response.close()
        return decode_and_pace(self._scheduler, self.options, self.platform, call, answer)

    def close(self) -> None:
        self._http.close()


def _deadline_from_answer(seconds: float) -> Callable[[str, Any], None]:
    """An httpx trace hook starting an upload's deadline once its body is sent and its answer awaited."""

    def trace(event: str, _: Any) -> None:
        if event == "http11.receive_response_headers.started":
            start_deadline(seconds)

    return trace
