"""A platform's auth flow (StackAI's OAuth token exchange) driven so that no answer passing through it is
read past the connection's size limit.

httpx reads every answer an auth flow sees whole when the flow asks for bodies
(``requires_response_body``), and reads an answer whole when the flow follows it with another request
(a 401 renewing the token), both before any size is checked: a token URL answering with an endless or
compressed-to-gigabytes body would grow the process without bound. Here each such answer's stream counts
its decompressed bytes as httpx reads it and stops past the limit with the provider's own error: the
answers to the flow's own requests (the token exchange), and an answer the flow follows with another
request. The final answer of the API call itself is left untouched, for the client to read within the
limit as every other answer (or to stream, for a file download).
An answer to the flow's own request is named by the auth's ``call_name`` (StackAI: "OAuth token").
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from typing import Any

import httpx

from airflow_flowruns.client.body import CALL_NAME
from airflow_flowruns.client.errors import reading_body
from airflow_flowruns.platforms.base import Platform


def bounded_auth(platform: Platform, limit: int) -> httpx.Auth | None:
    """The platform's auth flow (if any) with every answer it reads or makes httpx read within ``limit``."""
    auth = platform.auth()
    return None if auth is None else _BoundedAuth(auth, platform, limit)


class _BoundedAuth(httpx.Auth):
    def __init__(self, auth: httpx.Auth, platform: Platform, limit: int) -> None:
        self._auth = auth
        self._platform = platform
        self._limit = limit
        self.requires_request_body = auth.requires_request_body

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.requires_request_body:
            request.read()
        flow = self._auth.auth_flow(request)
        sent = next(flow)
        while True:
            response = yield sent
            if self._reads_body(request, sent):
                self._bound(request, sent, response)
                response.read()
            try:
                sent, answered = flow.send(response), sent
            except StopIteration:
                return  # the API call's own answer: the client reads it, within the limit (or streams a file)
            if not response.is_stream_consumed:  # httpx reads it whole before sending ``sent``
                self._bound(request, answered, response)

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self.requires_request_body:
            await request.aread()
        flow = self._auth.auth_flow(request)
        sent = next(flow)
        while True:
            response = yield sent
            if self._reads_body(request, sent):
                self._bound(request, sent, response)
                await response.aread()
            try:
                sent, answered = flow.send(response), sent
            except StopIteration:
                return
            if not response.is_stream_consumed:
                self._bound(request, answered, response)

    def _reads_body(self, request: httpx.Request, sent: httpx.Request) -> bool:
        """Whether the flow reads the body of the answer to ``sent``: one of its own requests' answers."""
        return sent is not request and self._auth.requires_response_body

    def _bound(self, request: httpx.Request, sent: httpx.Request, response: httpx.Response) -> None:
        """Make ``response``'s stream stop past the limit, with an error naming the call it answers."""
        if sent is not request:
            name = getattr(self._auth, "call_name", "authentication")
        else:
            name = request.extensions.get(CALL_NAME) or f"{request.method} {request.url.path}"
        response.stream = _LimitedStream(response.stream, self._platform, name, response.headers, self._limit)


class _LimitedStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A raw answer stream that counts the decompressed size of what passes and stops past the limit."""

    def __init__(self, stream: Any, platform: Platform, call_name: str, headers: httpx.Headers, limit: int) -> None:
        self._stream = stream
        self._reading = (platform, call_name, headers, limit)

    def __iter__(self) -> Iterator[bytes]:
        with reading_body(*self._reading, keep=False) as body:
            for chunk in self._stream:
                body.feed(chunk)
                yield chunk
            body.finish()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with reading_body(*self._reading, keep=False) as body:
            async for chunk in self._stream:
                body.feed(chunk)
                yield chunk
            body.finish()

    def close(self) -> None:
        self._stream.close()

    async def aclose(self) -> None:
        await self._stream.aclose()
