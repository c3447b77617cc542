"""The triggerer's client, shared by every trigger on one connection in one event loop.

It runs httpx on aiohttp's transport: measured on loopback HTTPS it costs a fraction of httpx's own
pool per poll and does not degrade with hundreds of polls in flight. A semaphore bounds the polls in
flight per connection, so a triggerer holding thousands of triggers sends at most
``max_concurrent_requests`` requests at once and opens at most that many TCP connections. Each request
(connect, send, read of the whole answer) ends within the call's or the connection's ``timeout``, so
slow answers cannot hold those slots.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import map_aiohttp_exceptions
from tenacity import AsyncRetrying

from airflow_flowruns import metrics
from airflow_flowruns.client.auth import bounded_auth
from airflow_flowruns.client.batching import ListingBatcher
from airflow_flowruns.client.body import ACCEPT_ENCODING, Answer, build_request, seconds_for
from airflow_flowruns.client.errors import (
    decode,
    found,
    reading_body,
    the_run_asked_for,
    translated_errors,
)
from airflow_flowruns.client.feed import ChangeFeed
from airflow_flowruns.client.listing import P, PageWalk, run_pages
from airflow_flowruns.client.options import KEEPALIVE_SECONDS, HttpOptions
from airflow_flowruns.client.proxies import environment_proxy, proxy_mounts
from airflow_flowruns.client.ratelimit import scheduler_for
from airflow_flowruns.client.retry import decode_and_pace, is_retryable, pace, retry_policy
from airflow_flowruns.client.tls import SchemeCheck
from airflow_flowruns.platforms.base import ApiCall, FlowRun, Platform, RunQuery

_CHUNK_BYTES = 64 * 1024
DECODE_ON_LOOP_BYTES = 1024 * 1024
"""Answers up to this size are decoded on the event loop (a few milliseconds: a run, a page of a listing);
a larger one, which only a runaway or hostile answer is, in a worker thread, where the check of its depth
lets the loop run. ``json.loads`` itself still holds the interpreter, about 15 ms a MiB, within
``max_response_bytes``."""


def _aiohttp_timeout(timeout: httpx.Timeout) -> aiohttp.ClientTimeout:
    """httpx's timeouts in aiohttp's terms, mapped as the httpx-aiohttp transport maps them."""
    return aiohttp.ClientTimeout(sock_connect=timeout.connect, sock_read=timeout.read, connect=timeout.pool)


def _aiohttp_proxy(proxy: httpx.Proxy | None) -> dict[str, Any]:
    """A proxy in aiohttp's request arguments, as the httpx-aiohttp transport passes it."""
    if proxy is None:
        return {}
    auth = aiohttp.BasicAuth(*proxy.auth) if proxy.auth else None
    return {"proxy": str(proxy.url), "proxy_auth": auth, "proxy_headers": proxy.headers}


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
            headers={**platform.headers(), "Accept-Encoding": ACCEPT_ENCODING},
            auth=bounded_auth(platform, options.max_response_bytes),
            timeout=options.timeout,
            transport=AiohttpTransport(client=self._aiohttp_session),
            mounts=proxy_mounts(lambda proxy: AiohttpTransport(client=self._aiohttp_session, proxy=proxy)),
        )
        self._base_url = str(self._http.base_url).rstrip("/") + "/"
        self._proxy = _aiohttp_proxy(environment_proxy(self._http.base_url))
        self._headers = dict(self._http.headers)
        self._timeout = _aiohttp_timeout(self._http.timeout)
        self._direct = self._http.auth is None
        self._scheme = SchemeCheck(platform.settings.base_url, options.timeout)
        self._batchers: dict[str | None, ListingBatcher] = {}
        feed_call = platform.change_feed_call()
        self._feed = ChangeFeed(platform, feed_call, self.call, self._read_any) if feed_call is not None else None

    @property
    def limited_answers(self) -> int:
        """429s the platform answered on this connection in this process (shared by its clients)."""
        return self._scheduler.limited_answers

    def _aiohttp_session(self) -> aiohttp.ClientSession:
        """One connection pool, made in the client's event loop, for both ways a request is sent."""
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.options.max_concurrent_requests, ssl=self._ssl, keepalive_timeout=KEEPALIVE_SECONDS
            )
            # No trust_env: aiohttp would then look the proxy up again and read ~/.netrc (in threads) for every
            # request, and add a netrc login beside the platform's own key. The environment's proxies are
            # chosen once, as httpx chooses them (``proxy_mounts``, ``environment_proxy``), for both ways a
            # request is sent, within the same overall deadline (``asyncio.timeout`` bounds either route).
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
        with translated_errors(self.platform, call):
            try:
                return await self._attempt(call)
            except Exception as exc:
                if not is_retryable(call)(exc):
                    raise
                first_failure: Exception | None = exc
            async for attempt in AsyncRetrying(**retry_policy(self.platform, self.options, call)):
                with attempt:
                    if first_failure is not None:
                        failure, first_failure = first_failure, None
                        raise failure
                    return await self._attempt(call)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def _attempt(self, call: ApiCall) -> Any:
        seconds = seconds_for(call, self.options.timeout)
        async with self._slots:
            queued = time.monotonic()
            await self._scheduler.await_turn()
            metrics.waited_for_turn(self.platform.name, self.platform.settings.conn_id, time.monotonic() - queued)
            try:
                answer = await self._answer(call, seconds)
            except httpx.TransportError as exc:
                judge = functools.partial(self._scheme.mistake, exc)
                mistake = await asyncio.to_thread(judge) if self._scheme.asks(exc) else judge()
                if mistake is None:
                    raise
                raise mistake.error(self.platform.label, call.name) from exc
        if len(answer.body) <= DECODE_ON_LOOP_BYTES:
            return decode_and_pace(self._scheduler, self.options, self.platform, call, answer)
        pace(self._scheduler, self.options, self.platform, answer.status, answer.headers)
        return await asyncio.to_thread(decode, self.platform, call, answer)

    async def _answer(self, call: ApiCall, seconds: float) -> Answer:
        """The whole answer within ``seconds``; no answer is an httpx error, whichever way the request went."""
        try:
            with metrics.unanswered_on(self.platform, TimeoutError, httpx.TransportError, aiohttp.ClientError):
                async with asyncio.timeout(seconds):
                    return await (self._send_direct(call) if self._direct else self._send(call))
        except TimeoutError:
            raise httpx.ReadTimeout(f"no complete answer within {seconds:g} s (the connection's timeout)") from None

    async def _send(self, call: ApiCall) -> Answer:
        request = build_request(self._http, call, seconds_for(call, self.options.timeout))
        response = await self._http.send(request, stream=True)
        try:
            with reading_body(self.platform, call.name, response.headers, self.options.max_response_bytes) as body:
                async for chunk in response.aiter_raw():
                    body.feed(chunk)
                return Answer(response.status_code, response.headers, body.finish())
        finally:
            await response.aclose()

    async def _send_direct(self, call: ApiCall) -> Answer:
        """The same request on the same pool, sent by aiohttp itself.

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
                **self._proxy,
                auto_decompress=False,  # decompressed within the size limit by reading_body
            ) as response:
                headers = httpx.Headers(response.raw_headers)
                with reading_body(self.platform, call.name, headers, self.options.max_response_bytes) as body:
                    async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
                        body.feed(chunk)
                    return Answer(response.status, headers, body.finish())

    async def get_run(self, flow_id: str | None, run_id: str) -> FlowRun:
        """The run as it is now; polls made together for runs of one flow share one listing where the
        platform has one that fits (``Platform.poll_listing``), or from the connection's change feed
        (``Platform.change_feed_call``)."""
        if self._feed is not None:
            return await self._feed.get_run(run_id)
        batcher = self._batchers.get(flow_id)
        if batcher is None:
            query = self.platform.poll_listing(flow_id)
            if query is None:
                return await self.read_run(flow_id, run_id)
            batcher = self._batchers[flow_id] = ListingBatcher(
                self.platform, query, self.walk_pages, functools.partial(self.read_run, flow_id)
            )
        return await batcher.get_run(run_id)

    async def _read_any(self, run_id: str) -> FlowRun:
        """A run read on its own for the change feed, which follows every flow of the connection."""
        return await self.read_run(None, run_id)

    async def read_run(self, flow_id: str | None, run_id: str) -> FlowRun:
        """The run, read on its own; it must be the run asked for."""
        call = self.platform.get_run_call(flow_id, run_id)
        if call is None:
            first: FlowRun | None = None
            async for run in self.iter_runs(self.platform.run_lookup(flow_id, run_id)):
                first = run
                break
            return found(self.platform, run_id, first)
        body = await self.call(call)
        with translated_errors(self.platform, call):
            return the_run_asked_for(self.platform, call, self.platform.parse_run(body, flow_id), flow_id, run_id)

    async def iter_runs(self, query: RunQuery) -> AsyncIterator[FlowRun]:
        """``FlowRunsClient.iter_runs``: a listing cut short at its bounds ends with the provider's error."""
        walk = run_pages(self.platform, query)
        async for page in self.walk_pages(walk):
            for run in filter(query.matches, page.runs):
                yield run
        walk.raise_if_cut_short()

    async def walk_pages(self, walk: PageWalk[P]) -> AsyncIterator[P]:
        """Drive ``walk``: perform each call it gives and hand on the page it makes of the answer."""
        for call in walk:
            yield walk.send(await self.call(call))

    async def aclose(self) -> None:
        if self._feed is not None:
            await self._feed.aclose()
        await self._http.aclose()
        if self._session is not None:
            await self._session.close()
