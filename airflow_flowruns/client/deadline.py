"""The overall deadline of one request: connecting, sending and reading the whole answer together.

Per-operation timeouts alone let a server that trickles its answer a byte at a time keep a request
(and its connection slot) alive indefinitely. The async client bounds a request with
``asyncio.timeout``, whatever the route; the sync client gives httpx a network backend whose every
socket operation waits at most the time left before the deadline of the request running in that thread,
on its direct transport and on the one of each proxy the environment names (``proxies.proxy_mounts``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import httpcore
import httpx

_deadline: ContextVar[float | None] = ContextVar("flowruns_request_deadline", default=None)


@contextmanager
def request_deadline(seconds: float | None) -> Iterator[None]:
    """Every socket operation inside must end within ``seconds`` of entering (None: no overall deadline)."""
    token = _deadline.set(None if seconds is None else time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def start_deadline(seconds: float) -> None:
    """Start the deadline now, for an upload: its body takes as long as the file does, its answer must not."""
    _deadline.set(time.monotonic() + seconds)


_PAST = "no complete answer before the request's overall deadline (the connection's timeout)"
T = TypeVar("T")


def _bounded(operation: Callable[[float | None], T], timeout: float | None, error: type[Exception]) -> T:
    """Run one socket operation with at most the time left before the running request's deadline."""
    deadline = _deadline.get()
    if deadline is None:
        return operation(timeout)
    left = deadline - time.monotonic()
    if left <= 0:
        raise error(_PAST)
    try:
        return operation(left if timeout is None else min(timeout, left))
    except error:
        if deadline <= time.monotonic():
            raise error(_PAST) from None
        raise


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return _bounded(lambda left: self._stream.read(max_bytes, left), timeout, httpcore.ReadTimeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        _bounded(lambda left: self._stream.write(buffer, left), timeout, httpcore.WriteTimeout)

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
        tls = _bounded(
            lambda left: self._stream.start_tls(ssl_context, server_hostname, left), timeout, httpcore.ConnectTimeout
        )
        return _DeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's sync network backend, each socket operation cut at the running request's deadline."""

    def __init__(self, backend: httpcore.NetworkBackend | None = None) -> None:
        self._backend = backend or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = _bounded(
            lambda left: self._backend.connect_tcp(host, port, left, local_address, socket_options),
            timeout,
            httpcore.ConnectTimeout,
        )
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        stream = _bounded(
            lambda left: self._backend.connect_unix_socket(path, left, socket_options), timeout, httpcore.ConnectTimeout
        )
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def sync_transport(**kwargs: Any) -> httpx.HTTPTransport:
    """httpx's sync transport on ``DeadlineBackend`` (through a proxy too, given ``proxy``)."""
    transport = httpx.HTTPTransport(**kwargs)
    pool = transport._pool  # httpx exposes no way to pass a network backend
    pool._network_backend = DeadlineBackend(pool._network_backend)
    return transport
