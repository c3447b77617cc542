"""One exchange as both clients see it: the request built from an ``ApiCall``, and the answer's
body, read as it arrives and refused once it passes the connection's size limit.

The limit counts decompressed bytes and is checked while decompressing, so neither a huge or endless
body nor a small compressed one that expands to gigabytes can grow the process past it. Only the
encodings the clients ask for (``ACCEPT_ENCODING``) are decoded; anything else is refused.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from airflow_flowruns.platforms.base import ApiCall

ACCEPT_ENCODING = "gzip, deflate"
"""What both clients ask for, so every answer they accept is one this module can decode within the limit."""
_STEP = 64 * 1024
"""Decompressed bytes produced per step, so passing the limit is seen within this much."""
CALL_NAME = "flowruns_call"
"""The request extension naming the provider's call, so an answer read by an auth flow is named in its error."""
_WBITS = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}


def build_request(http: httpx.Client | httpx.AsyncClient, call: ApiCall, seconds: float, **extra: Any) -> httpx.Request:
    """The request for ``call`` on either client, its per-operation timeouts ``seconds``, named by the call."""
    extensions = {CALL_NAME: call.name, **(extra.pop("extensions", None) or {})}
    return http.build_request(
        call.method,
        call.path,
        params=call.params,
        json=call.json,
        data=call.data,
        timeout=seconds,
        extensions=extensions,
        **extra,
    )


def seconds_for(call: ApiCall, default: float) -> float:
    """The overall deadline of one request: the call's own timeout, or the connection's."""
    return call.timeout if call.timeout is not None else default


class BodyTooLarge(Exception):
    """The body passed the limit; ``seen`` is how many decompressed bytes were read before stopping."""

    def __init__(self, seen: int, declared: int | None) -> None:
        super().__init__(seen)
        self.seen = seen
        self.declared = declared


class UnknownEncoding(Exception):
    """The body is compressed in a way the clients did not ask for."""


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, its body read whole and decompressed."""

    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class BoundedBody:
    """Collects the raw chunks of one body, decompressing them, and raises once it passes ``limit`` bytes.

    With ``keep`` false it only counts: the body is kept by whoever reads it (httpx, for an auth flow).
    """

    def __init__(self, headers: Mapping[str, str], limit: int, *, keep: bool = True) -> None:
        self._limit = limit
        self._keep_parts = keep
        self._parts: list[bytes] = []
        self._size = 0
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity", *_WBITS):
            raise UnknownEncoding(encoding)
        self._inflate = zlib.decompressobj(_WBITS[encoding]) if encoding in _WBITS else None
        self._deflate_raw = encoding == "deflate"
        declared = headers.get("content-length", "")
        self._declared = int(declared) if declared.isdigit() else None
        if self._inflate is None and self._declared is not None and self._declared > limit:
            raise BodyTooLarge(0, self._declared)

    def feed(self, chunk: bytes) -> None:
        for data in self.decoded(chunk):
            self._keep(data)

    def decoded(self, chunk: bytes) -> Iterator[bytes]:
        """``chunk`` decompressed, in pieces of at most 64 KiB each counted as it is made: a caller streaming
        the body elsewhere (an output file) holds one piece at a time, whatever the compression ratio."""
        if self._inflate is None:
            yield self._counted(chunk)
            return
        while chunk:
            room = self._limit - self._size
            try:
                out = self._inflate.decompress(chunk, min(room + 1, _STEP))
            except zlib.error:
                if not (self._deflate_raw and self._size == 0):
                    raise
                # "deflate" sent without its zlib header, as some servers do: decode it raw.
                self._inflate, self._deflate_raw = zlib.decompressobj(-zlib.MAX_WBITS), False
                continue
            yield self._counted(out)
            chunk = self._inflate.unconsumed_tail

    def rest(self) -> bytes:
        """What the decompressor still holds once the body has ended, counted."""
        return self._counted(self._inflate.flush(self._limit - self._size + 1)) if self._inflate is not None else b""

    def _counted(self, data: bytes) -> bytes:
        self._size += len(data)
        if self._size > self._limit:
            self._parts.clear()
            raise BodyTooLarge(self._size, self._declared)
        return data

    def _keep(self, data: bytes) -> None:
        if data and self._keep_parts:
            self._parts.append(data)

    def finish(self) -> bytes:
        self._keep(self.rest())
        return b"".join(self._parts)
