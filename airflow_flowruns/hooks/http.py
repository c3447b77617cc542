"""Perform a platform's :class:`ApiCall`\\ s over HTTP: one retry policy and one error translation,
shared by the sync client (workers) and the async client (triggerer).

The async client runs httpx on aiohttp's transport: measured on loopback HTTPS it costs a fraction of
httpx's own pool per poll and does not degrade with hundreds of polls in flight. A semaphore bounds
the polls in flight per connection, so a triggerer holding thousands of triggers sends at most
``max_concurrent_requests`` requests at once and opens at most that many TCP connections.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Self

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import map_aiohttp_exceptions
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from airflow_flowruns.exceptions import (
    FlowRunsApiError,
    FlowRunsAuthError,
    FlowRunsConfigError,
    FlowRunsResponseError,
)
from airflow_flowruns.hooks.batching import ListingBatcher
from airflow_flowruns.hooks.ratelimit import RequestScheduler, scheduler_for
from airflow_flowruns.platforms.base import ApiCall, FlowRun, Platform, RunQuery

log = logging.getLogger(__name__)

_NO_JSON = object()
KEEPALIVE_SECONDS = 50.0
"""How long an idle connection is kept: past the default 30 s poll interval, so a trigger's next poll
finds it open, and under the 60 s idle timeout of common load balancers, so the server never closes it
first."""


@dataclass(frozen=True)
class HttpOptions:
    """Client settings, read from the connection's extras so every task and trigger on it agrees."""

    timeout: float = 30.0
    max_retries: int = 5
    retry_min_wait: float = 1.0
    retry_max_wait: float = 60.0
    verify: bool | str = True
    max_concurrent_requests: int = 32
    max_requests_per_second: float | None = None

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any], conn_id: str) -> Self:
        values: dict[str, Any] = {}
        for name, kind in (
            ("timeout", float),
            ("max_retries", int),
            ("retry_min_wait", float),
            ("retry_max_wait", float),
            ("max_concurrent_requests", int),
            ("max_requests_per_second", float),
        ):
            if extras.get(name) is None:
                continue
            try:
                values[name] = kind(extras[name])
            except (TypeError, ValueError):
                raise FlowRunsConfigError(
                    f"Connection {conn_id!r}: extra {name!r} must be a number, not {extras[name]!r}."
                ) from None
            zero_allowed = name in ("max_retries", "retry_min_wait", "retry_max_wait")
            if values[name] < 0 or (values[name] == 0 and not zero_allowed):
                raise FlowRunsConfigError(f"Connection {conn_id!r}: extra {name!r} must be positive.")
        verify = extras.get("verify", True)
        if isinstance(verify, str) and verify.lower() in ("true", "false"):
            verify = verify.lower() == "true"
        values["verify"] = verify
        return cls(**values)

    def ssl_context(self) -> ssl.SSLContext | bool:
        """TLS verification stays on unless the connection turns it off; a string is a CA bundle path."""
        if isinstance(self.verify, str):
            return ssl.create_default_context(cafile=self.verify)
        return self.verify


def decode(platform: Platform, call: ApiCall, response: httpx.Response) -> Any:
    """Return the decoded JSON body, or raise an error that names the platform, call, status and why."""
    body = _json_body(response)
    status = response.status_code
    if status >= 400:
        detail = platform.error_detail(body) if body is not _NO_JSON else None
        error_cls = FlowRunsAuthError if status in (401, 403) else FlowRunsApiError
        raise error_cls(
            platform=platform.label,
            call=call.name,
            status=status,
            detail=detail or (_describe_body(response) if body is _NO_JSON else response.text[:300]),
            retryable=platform.is_retryable(status, None if body is _NO_JSON else body),
            retry_after=_retry_after(response),
        )
    if body is _NO_JSON:
        raise FlowRunsResponseError(
            f"{platform.label} API call '{call.name}' answered HTTP {status} with {_describe_body(response)} "
            "instead of JSON. Check that the connection's host is the platform's API base URL.",
            retryable=True,
        )
    return body


def _json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return _NO_JSON


_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def _describe_body(response: httpx.Response) -> str:
    content = response.content
    if not content.strip():
        return "an empty body"
    if "html" in response.headers.get("content-type", "") or content.lstrip()[:1] == b"<":
        title = _TITLE.search(content[:4096])
        named = f" titled {title.group(1).decode(errors='replace').strip()[:80]!r}" if title else ""
        return f"an HTML page{named} (a proxy, gateway or login page?)"
    return f"a body that is not valid JSON ({len(content)} bytes)"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, when.timestamp() - time.time()) if when else None


class _WaitRetryAfter:
    """Exponential backoff with jitter, unless the platform said how long to wait."""

    def __init__(self, options: HttpOptions) -> None:
        self._backoff = wait_exponential_jitter(initial=options.retry_min_wait, max=options.retry_max_wait)
        self._cap = options.retry_max_wait

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, FlowRunsApiError) and exc.retry_after is not None:
            return min(exc.retry_after, self._cap)
        return float(self._backoff(state))


def _is_retryable(call: ApiCall) -> Callable[[BaseException], bool]:
    def check(exc: BaseException) -> bool:
        if isinstance(exc, FlowRunsApiError):
            return exc.retryable and (call.idempotent or exc.status == 429)
        if isinstance(exc, FlowRunsResponseError):
            return exc.retryable and call.idempotent
        if isinstance(exc, httpx.TransportError):
            return call.idempotent or isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
        return False

    return check


def _retry_policy(platform: Platform, options: HttpOptions, call: ApiCall) -> dict[str, Any]:
    def log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "%s '%s' attempt %d failed (%s); retrying in %.1f s",
            platform.label,
            call.name,
            state.attempt_number,
            exc,
            wait,
        )

    return {
        "retry": retry_if_exception(_is_retryable(call)),
        "wait": _WaitRetryAfter(options),
        "stop": stop_after_attempt(options.max_retries + 1),
        "before_sleep": log_retry,
        "reraise": True,
    }


def _unreachable(platform: Platform, call: ApiCall, exc: httpx.TransportError) -> FlowRunsApiError:
    error = FlowRunsApiError(
        platform=platform.label,
        call=call.name,
        status=None,
        detail=f"{type(exc).__name__}: {exc or 'connection failed'}",
        retryable=True,
    )
    error.outcome_unknown = not call.idempotent and not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
    return error


def _mark_outcome(call: ApiCall, exc: FlowRunsApiError | FlowRunsResponseError) -> None:
    """Mark the last error of a call that changes state when the platform may have done it anyway.

    Only the call itself can tell: an upload or a check that failed before the start call was sent
    cannot have started a run, whatever the error.
    """
    if not call.idempotent:
        status = getattr(exc, "status", None)
        exc.outcome_unknown = isinstance(exc, FlowRunsResponseError) or status is None or status >= 500


def _decode_and_pace(scheduler: RequestScheduler, platform: Platform, call: ApiCall, response: httpx.Response) -> Any:
    """Decode, and after a 429 hold every request on this connection for as long as the platform asked."""
    if response.status_code == 429:
        scheduler.pause(_retry_after(response))
    return decode(platform, call, response)


def _aiohttp_timeout(timeout: httpx.Timeout) -> aiohttp.ClientTimeout:
    """httpx's timeouts in aiohttp's terms, mapped as the httpx-aiohttp transport maps them."""
    return aiohttp.ClientTimeout(sock_connect=timeout.connect, sock_read=timeout.read, connect=timeout.pool)


def _found(platform: Platform, run_id: str, run: FlowRun | None) -> FlowRun:
    """A run looked up by listing, for platforms with no call that reads one run."""
    if run is None:
        raise FlowRunsApiError(
            platform=platform.label,
            call="find run",
            status=404,
            detail=f"no run {run_id!r} in the flow's run listing",
            retryable=False,
        )
    return run


class FlowRunsClient:
    """Blocking client for workers: uploads stream from disk, so memory does not grow with file size."""

    def __init__(self, platform: Platform, options: HttpOptions) -> None:
        self.platform = platform
        self.options = options
        self._scheduler = scheduler_for(platform.settings.conn_id, options.max_requests_per_second)
        self._http = httpx.Client(
            base_url=platform.settings.base_url,
            headers=platform.headers(),
            auth=platform.auth(),
            timeout=options.timeout,
            verify=options.ssl_context(),
            limits=httpx.Limits(keepalive_expiry=KEEPALIVE_SECONDS),
        )

    def call(self, call: ApiCall) -> Any:
        try:
            for attempt in Retrying(**_retry_policy(self.platform, self.options, call)):
                with attempt:
                    return self._send(call)
        except httpx.TransportError as exc:
            raise _unreachable(self.platform, call, exc) from exc
        except (FlowRunsApiError, FlowRunsResponseError) as exc:
            _mark_outcome(call, exc)
            raise
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def get_run(self, flow_id: str | None, run_id: str) -> FlowRun:
        call = self.platform.get_run_call(flow_id, run_id)
        if call is None:
            return _found(self.platform, run_id, next(self.iter_runs(self.platform.run_lookup(flow_id, run_id)), None))
        return self.platform.parse_run(self.call(call), flow_id)

    def iter_runs(self, query: RunQuery) -> Iterator[FlowRun]:
        """Walk the listing lazily: one request per page, one page in memory at a time."""
        call: ApiCall | None = self.platform.list_runs_call(query)
        while call is not None:
            page = self.platform.parse_runs_page(self.call(call), call, query)
            yield from filter(query.matches, page.runs)
            call = page.next_call

    def _send(self, call: ApiCall) -> Any:
        with ExitStack() as files:
            parts = [
                (part.field, (part.filename, files.enter_context(part.path.open("rb")), part.content_type))
                for part in call.files
            ]
            self._scheduler.wait()
            response = self._http.request(
                call.method,
                call.path,
                params=call.params,
                json=call.json,
                data=call.data,
                files=parts or None,
                timeout=call.timeout if call.timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        return _decode_and_pace(self._scheduler, self.platform, call, response)

    def close(self) -> None:
        self._http.close()


class AsyncFlowRunsClient:
    """Client for the triggerer, shared by every trigger on one connection in one event loop."""

    def __init__(self, platform: Platform, options: HttpOptions) -> None:
        self.platform = platform
        self.options = options
        self._scheduler = scheduler_for(platform.settings.conn_id, options.max_requests_per_second)
        slots = options.max_concurrent_requests
        self._slots = asyncio.Semaphore(slots)
        self._ssl = httpx.create_ssl_context(verify=options.ssl_context())
        self._session: aiohttp.ClientSession | None = None
        self._http = httpx.AsyncClient(
            base_url=platform.settings.base_url,
            headers=platform.headers(),
            auth=platform.auth(),
            timeout=options.timeout,
            transport=AiohttpTransport(client=self._aiohttp_session),
        )
        self._base_url = str(self._http.base_url).rstrip("/") + "/"
        self._headers = dict(self._http.headers)
        self._timeout = _aiohttp_timeout(self._http.timeout)
        self._direct = self._http.auth is None
        self._batchers: dict[str | None, ListingBatcher] = {}

    def _aiohttp_session(self) -> aiohttp.ClientSession:
        """One connection pool, made in the client's event loop, for both ways a request is sent."""
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.options.max_concurrent_requests, ssl=self._ssl, keepalive_timeout=KEEPALIVE_SECONDS
            )
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def call(self, call: ApiCall) -> Any:
        """One attempt first, and tenacity only once that failed.

        Tenacity's per-call state forms reference cycles that only the garbage collector frees; made for
        every poll of thousands of triggers, it was a third of the triggerer's CPU (full collections,
        see benchmarks/README.md). A first failure is handed to tenacity as its first attempt, so
        attempts, waits and logging are exactly those of a call retried from the start.
        """
        if call.files:
            raise ValueError("uploads run in the worker, never in the triggerer")
        try:
            try:
                return await self._attempt(call)
            except Exception as exc:
                if not _is_retryable(call)(exc):
                    raise
                first_failure: Exception | None = exc
            async for attempt in AsyncRetrying(**_retry_policy(self.platform, self.options, call)):
                with attempt:
                    if first_failure is not None:
                        failure, first_failure = first_failure, None
                        raise failure
                    return await self._attempt(call)
        except httpx.TransportError as exc:
            raise _unreachable(self.platform, call, exc) from exc
        except (FlowRunsApiError, FlowRunsResponseError) as exc:
            _mark_outcome(call, exc)
            raise
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def _attempt(self, call: ApiCall) -> Any:
        async with self._slots:
            await self._scheduler.await_turn()
            response = await (self._send_direct(call) if self._direct else self._send(call))
        return _decode_and_pace(self._scheduler, self.platform, call, response)

    async def _send(self, call: ApiCall) -> httpx.Response:
        return await self._http.request(
            call.method,
            call.path,
            params=call.params,
            json=call.json,
            data=call.data,
            timeout=call.timeout if call.timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )

    async def _send_direct(self, call: ApiCall) -> httpx.Response:
        """The same request on the same pool, sent by aiohttp itself; the answer comes back as an httpx.Response.

        Going through ``AsyncClient`` costs more than the request: it parses and merges the URL, builds
        a request model, runs the cookie jar and the auth and redirect machinery and streams the body
        through two layers, on every poll. None of it applies where the key is a header, so those
        requests skip it; an auth flow (StackAI's OAuth) goes through ``_send``.
        """
        timeout = self._timeout if call.timeout is None else _aiohttp_timeout(httpx.Timeout(call.timeout))
        with map_aiohttp_exceptions():
            async with self._aiohttp_session().request(
                call.method,
                self._base_url + call.path.lstrip("/"),
                params=call.params,
                json=call.json,
                data=call.data,
                headers=self._headers,
                timeout=timeout,
                allow_redirects=False,
                auto_decompress=False,  # httpx.Response decodes, as it does for the transport
            ) as answer:
                body = await answer.read()
        return httpx.Response(answer.status, headers=answer.raw_headers, content=body)

    async def get_run(self, flow_id: str | None, run_id: str) -> FlowRun:
        """The run as it is now; polls made together for runs of one flow share one listing where the
        platform has one that fits (``Platform.poll_listing``)."""
        batcher = self._batchers.get(flow_id)
        if batcher is None:
            query = self.platform.poll_listing(flow_id)
            if query is None:
                return await self.read_run(flow_id, run_id)
            batcher = self._batchers[flow_id] = ListingBatcher(
                self.platform, query, self.call, functools.partial(self.read_run, flow_id)
            )
        return await batcher.get_run(run_id)

    async def read_run(self, flow_id: str | None, run_id: str) -> FlowRun:
        """The run, read on its own."""
        call = self.platform.get_run_call(flow_id, run_id)
        if call is None:
            found = None
            async for run in self.iter_runs(self.platform.run_lookup(flow_id, run_id)):
                found = run
                break
            return _found(self.platform, run_id, found)
        return self.platform.parse_run(await self.call(call), flow_id)

    async def iter_runs(self, query: RunQuery) -> AsyncIterator[FlowRun]:
        call: ApiCall | None = self.platform.list_runs_call(query)
        while call is not None:
            page = self.platform.parse_runs_page(await self.call(call), call, query)
            for run in filter(query.matches, page.runs):
                yield run
            call = page.next_call

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._session is not None:
            await self._session.close()
