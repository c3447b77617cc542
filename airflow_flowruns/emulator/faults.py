"""Fault mode: a share of API requests answered the way real platforms and networks fail.

Faults that a platform answers before doing anything (429, 5xx, an HTML page from a gateway) never
reach the route. Faults that happen on the way back (a dropped connection, a stall past the client's
timeout, a body cut short) run the route first: a start call that meets one of them has created its
run, and the client cannot know. That is the case a provider must reconcile rather than repeat.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

from fastapi import Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

FaultKind = Literal["429", "429_retry_after", "500", "502", "503", "html", "drop", "stall", "malformed", "500_after"]
"""``500_after``: the route runs (a start makes its run), then a 500 answers; only as a scripted fault."""
ALL_KINDS: tuple[FaultKind, ...] = ("429", "429_retry_after", "500", "502", "503", "html", "drop", "stall", "malformed")
_BEFORE = {"429": 429, "429_retry_after": 429, "500": 500, "502": 502, "503": 503}
_HTML = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"


class FaultMode(BaseModel):
    rate: float = Field(0.0, ge=0.0, le=1.0)
    """Share of API requests that meet a fault."""
    kinds: list[FaultKind] = Field(default_factory=lambda: list(ALL_KINDS))
    stall_seconds: float = Field(35.0, ge=0.0, le=3600.0)
    """How long a stall holds the answer back: longer than the client's timeout."""
    retry_after: float = Field(1.0, ge=0.0, le=3600.0)
    seed: int | None = None


class DroppedConnection(Exception):
    """Raised mid-body so the server closes the connection before the response is complete."""


class _QuietDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DroppedConnection))


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


ErrorBody = Callable[[int, str, str], dict[str, Any]]


class FaultInjector:
    def __init__(self, mode: FaultMode | None = None) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.set_mode(mode or FaultMode())

    def set_mode(self, mode: FaultMode) -> None:
        with self._lock:
            self.mode = mode
            self._random = random.Random(mode.seed)

    def pick(self) -> FaultKind | None:
        with self._lock:
            if not self.mode.kinds or self._random.random() >= self.mode.rate:
                return None
            kind = self._random.choice(self.mode.kinds)
            self.counts[kind] += 1
            return kind

    async def respond(
        self,
        kind: FaultKind,
        request: Request,
        call_next: Callable[[Request], Awaitable[Response]],
        error_body: ErrorBody,
    ) -> Response:
        if kind in _BEFORE:
            status = _BEFORE[kind]
            headers = {"Retry-After": f"{self.mode.retry_after:g}"} if kind == "429_retry_after" else {}
            title = "Too Many Requests" if status == 429 else "Server Error"
            return JSONResponse(error_body(status, title, f"injected fault {kind}"), status, headers)
        if kind == "html":
            return Response(_HTML, 502, media_type="text/html")
        handled = await call_next(request)
        if kind == "500_after":
            return JSONResponse(error_body(500, "Server Error", "injected fault 500_after"), 500)
        body = b"".join([chunk async for chunk in handled.body_iterator])  # type: ignore[attr-defined]
        if kind == "stall":
            await asyncio.sleep(self.mode.stall_seconds)
            return Response(body, handled.status_code, media_type=handled.media_type or "application/json")
        if kind == "malformed":
            return Response(body[: max(1, len(body) // 2)], 200, media_type="application/json")
        return StreamingResponse(_cut_short(body), handled.status_code, media_type="application/json")


async def _cut_short(body: bytes) -> AsyncIterator[bytes]:
    yield body[: len(body) // 2]
    raise DroppedConnection("connection dropped mid-response (injected fault)")
