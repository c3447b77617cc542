"""A platform's auth flow (StackAI's OAuth token exchange) driven so that no answer passing through it is
read past the connection's size limit.

httpx reads every answer an auth flow sees whole when the flow asks for bodies
(``requires_response_body``), and reads an answer whole when the flow follows it with another request
(a 401 renewing the token), both before any size is checked: a token URL answering with an endless or
compressed-to-gigabytes body would grow the process without bound. Here each such answer's stream counts
its decompressed bytes as httpx reads it and stops past the limit with the provider's own error; the
answers to the flow's own requests (the token exchange) are read within the limit, and the answer of
the API call itself is left unread, for the client to read within the limit as every other answer.
An answer to the flow's own request is named by the auth's ``call_name`` (StackAI: "OAuth token").
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from typing import Any

import httpx

from airflow_flowruns.hooks.http.body import CALL_NAME
from airflow_flowruns.hooks.http.errors import reading_body
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
            if self._limited(request, sent, response):
                response.read()
            try:
                sent = flow.send(response)
            except StopIteration:
                return

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self.requires_request_body:
            await request.aread()
        flow = self._auth.auth_flow(request)
        sent = next(flow)
        while True:
            response = yield sent
            if self._limited(request, sent, response):
                await response.aread()
            try:
                sent = flow.send(response)
            except StopIteration:
                return

    def _limited(self, request: httpx.Request, sent: httpx.Request, response: httpx.Response) -> bool:
        """Bound ``response``'s stream to the limit; whether the flow must see its body read (an answer to
        one of the flow's own requests, where the flow reads bodies)."""
        own = sent is not request
        name = getattr(self._auth, "call_name", "authentication") if own else request.extensions.get(CALL_NAME, "")
        response.stream = _LimitedStream(response.stream, self._platform, name, response.headers, self._limit)
        return own and self._auth.requires_response_body


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
