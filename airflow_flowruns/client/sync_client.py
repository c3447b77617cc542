"""The blocking client, for workers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from typing import Any

import httpx
from tenacity import Retrying

from airflow_flowruns import metrics
from airflow_flowruns.client.auth import bounded_auth
from airflow_flowruns.client.body import ACCEPT_ENCODING, Answer, build_request, seconds_for
from airflow_flowruns.client.deadline import request_deadline, start_deadline, sync_transport
from airflow_flowruns.client.errors import (
    found,
    reading_body,
    the_run_asked_for,
    translated_errors,
)
from airflow_flowruns.client.listing import LISTING_BOUNDS, P, PageWalk, WalkBounds, run_pages
from airflow_flowruns.client.options import KEEPALIVE_SECONDS, HttpOptions
from airflow_flowruns.client.proxies import proxy_mounts
from airflow_flowruns.client.ratelimit import scheduler_for
from airflow_flowruns.client.retry import decode_and_pace, pace, retry_policy, time_left
from airflow_flowruns.client.tls import SchemeCheck
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
        self._http = _http_client(platform, options, credentials=True)
        self._scheme = SchemeCheck(platform.settings.base_url, options.timeout)
        self._presigned: httpx.Client | None = None

    @property
    def limited_answers(self) -> int:
        """429s the platform answered on this connection in this process (shared by its clients)."""
        return self._scheduler.limited_answers

    def call(self, call: ApiCall) -> Any:
        with translated_errors(self.platform, call):
            for attempt in Retrying(**retry_policy(self.platform, self.options, call)):
                with attempt:
                    return self._send(call)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def get_run(self, flow_id: str | None, run_id: str) -> FlowRun:
        call = self.platform.get_run_call(flow_id, run_id)
        if call is None:
            lookup = self.platform.run_lookup(flow_id, run_id)
            return found(self.platform, run_id, next(self.iter_runs(lookup, _bounds_before_deadline()), None))
        body = self.call(call)
        with translated_errors(self.platform, call):
            return the_run_asked_for(self.platform, call, self.platform.parse_run(body, flow_id), flow_id, run_id)

    def iter_runs(self, query: RunQuery, bounds: WalkBounds = LISTING_BOUNDS) -> Iterator[FlowRun]:
        """Walk the listing lazily: one request per page, one page in memory at a time.

        A listing cut short at ``bounds`` ends with the provider's error once the runs read are given, so
        no reader takes a part of it for the whole (``PageWalk.raise_if_cut_short``).
        """
        walk = run_pages(self.platform, query, bounds=bounds)
        for page in self.walk_pages(walk):
            yield from filter(query.matches, page.runs)
        walk.raise_if_cut_short()

    def walk_pages(self, walk: PageWalk[P]) -> Iterator[P]:
        """Drive ``walk``: perform each call it gives and hand on the page it makes of the answer."""
        for call in walk:
            yield walk.send(self.call(call))

    def _send(self, call: ApiCall) -> Any:
        seconds = seconds_for(call, self.options.timeout)
        parts: list[tuple[str, tuple[str, Any, str]]] = [
            (part.field, (part.filename, OpenWhileRead(part.path), part.content_type)) for part in call.files
        ]
        self._wait_for_turn()
        request = build_request(
            self._http,
            call,
            seconds,
            files=parts or None,
            extensions={"trace": _deadline_from_answer(seconds)} if parts else None,
        )
        with (
            self._scheme.judging(self.platform.label, call.name),
            ExitStack() as opened,
            metrics.unanswered_on(self.platform, httpx.TransportError),
        ):
            for _, (_, file, _) in parts:
                opened.callback(file.close)
            with (
                _streamed(self._http, request, None if parts else seconds) as response,
                reading_body(self.platform, call.name, response.headers, self.options.max_response_bytes) as body,
            ):
                for chunk in response.iter_raw():
                    body.feed(chunk)
                answer = Answer(response.status_code, response.headers, body.finish())
        return decode_and_pace(self._scheduler, self.options, self.platform, call, answer)

    @contextmanager
    def stream(self, call: ApiCall) -> Iterator[httpx.Response]:
        """``call``'s answer with its body unread, for the caller to stream (a file download).

        Sent as every call is, paced by the connection's scheduler, but made once: neither retried, decoded
        nor held to the size limit. Its headers must come within the call's deadline; whoever reads the
        body restarts that deadline for each part it waits for (``start_deadline``).
        """
        seconds = seconds_for(call, self.options.timeout)
        self._wait_for_turn()
        with _streamed(self._http, build_request(self._http, call, seconds), seconds) as response:
            pace(self._scheduler, self.options, self.platform, response.status_code, response.headers)
            yield response

    @contextmanager
    def stream_presigned(self, url: str) -> Iterator[httpx.Response]:
        """A presigned URL's answer with its body unread, as ``stream``, through a client that carries none
        of the connection's credentials: the API key never reaches the storage host the URL points at. It
        asks for the encodings the API client does, which are the ones a download decodes within its limit."""
        if self._presigned is None:
            self._presigned = _http_client(self.platform, self.options, credentials=False)
        request = self._presigned.build_request("GET", url, headers={"Accept-Encoding": ACCEPT_ENCODING})
        with _streamed(self._presigned, request, self.options.timeout) as response:
            yield response

    def _wait_for_turn(self) -> None:
        queued = time.monotonic()
        self._scheduler.wait()
        metrics.waited_for_turn(self.platform.name, self.platform.settings.conn_id, time.monotonic() - queued)

    def close(self) -> None:
        self._http.close()
        if self._presigned is not None:
            self._presigned.close()


def _bounds_before_deadline() -> WalkBounds:
    """The listing's bounds for a run read by walking it, which ends by the deadline of the task waiting on the
    run (``retry.until``), if any: a listing that never ends then lets the wait's timeout fire on time."""
    left = time_left()
    if left is None:
        return LISTING_BOUNDS
    return replace(LISTING_BOUNDS, seconds=min(LISTING_BOUNDS.seconds, max(0.0, left)))


def _http_client(platform: Platform, options: HttpOptions, *, credentials: bool) -> httpx.Client:
    """httpx's client on the deadline transport, directly or through the proxies the environment names: for
    the platform's API (its base URL, headers and auth flow) with ``credentials``, for presigned URLs without.

    Neither follows a redirect (httpx's default): it would take the request to a host that was never named.
    """
    transport = {"verify": options.ssl_context(), "limits": httpx.Limits(keepalive_expiry=KEEPALIVE_SECONDS)}
    api: dict[str, Any] = {
        "base_url": platform.settings.base_url,
        "headers": {**platform.headers(), "Accept-Encoding": ACCEPT_ENCODING},
        "auth": bounded_auth(platform, options.max_response_bytes),
    }
    return httpx.Client(
        timeout=options.timeout,
        transport=sync_transport(**transport),
        mounts=proxy_mounts(lambda proxy: sync_transport(proxy=proxy, **transport)),
        **(api if credentials else {}),
    )


@contextmanager
def _streamed(http: httpx.Client, request: httpx.Request, seconds: float | None) -> Iterator[httpx.Response]:
    """The answer to ``request``, closed once read; the request must end within ``seconds`` (None: its
    deadline is started later, as an upload's is)."""
    with request_deadline(seconds):
        response = http.send(request, stream=True)
        try:
            yield response
        finally:
            response.close()


def _deadline_from_answer(seconds: float) -> Callable[[str, Any], None]:
    """An httpx trace hook starting an upload's deadline once its body is sent and its answer awaited."""

    def trace(event: str, _: Any) -> None:
        if event == "http11.receive_response_headers.started":
            start_deadline(seconds)

    return trace
