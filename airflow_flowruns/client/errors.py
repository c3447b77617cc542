"""An answer or a failure of one call, turned into the provider's own error naming platform and call.

Every text that came from the server is scrubbed of the connection's secrets (``Platform.secrets``)
before it is put into an error, so a server that echoes the ``Authorization`` header it received
cannot carry the key into a task log or a trigger event.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC
from typing import Any
from urllib.parse import urlsplit

import httpx

from airflow_flowruns.client.body import Answer, BodyTooLarge, BoundedBody, UnknownEncoding
from airflow_flowruns.exceptions import (
    FlowRunsApiError,
    FlowRunsAuthError,
    FlowRunsError,
    FlowRunsResponseError,
    FlowRunsTlsError,
)
from airflow_flowruns.platforms.base import ApiCall, FlowRun, Platform

MAX_JSON_DEPTH = 64
"""Deeper answers are refused: no platform nests this deep, and deeper JSON makes recursive code fail later."""
_NO_JSON = object()
_TOO_DEEP = object()
_UNREADABLE = (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError)
"""What parsing an answer of an unexpected shape raises (pydantic's ValidationError is a ValueError)."""


def decode(platform: Platform, call: ApiCall, answer: Answer) -> Any:
    """Return the decoded JSON body, or raise an error that names the platform, call, status and why.

    Only a 2xx is success: a redirect is never followed (it would take the key to another address).
    """
    body = _json_body(platform, call, answer)
    status = answer.status
    if status >= 300:
        detail = platform.error_detail(body) if body is not _NO_JSON else None
        if 300 <= status < 400:
            detail = f"a redirect to {answer.headers.get('location', 'nowhere')!r}, which is never followed"
        error_cls = FlowRunsAuthError if status in (401, 403) else FlowRunsApiError
        raise error_cls(
            platform=platform.label,
            call=call.name,
            status=status,
            detail=scrub(platform, detail or (_describe_body(answer) if body is _NO_JSON else answer.text[:300])),
            retryable=platform.is_retryable(status, None if body is _NO_JSON else body),
            retry_after=retry_after(answer.headers),
            hint=not_found(platform, call) if status == 404 else None,
        )
    if body is _NO_JSON:
        raise FlowRunsResponseError(
            f"{platform.label} API call '{call.name}' answered HTTP {status} with "
            f"{scrub(platform, _describe_body(answer))} instead of JSON. Check that the connection's host is the "
            "platform's API base URL.",
            retryable=True,
        )
    return body


def not_found(platform: Platform, call: ApiCall) -> str:
    """What a 404 tells, by the call: one naming an id may ask for one the platform does not know; one naming
    none was sent to an address where the platform's API is not, so the host or its path is wrong."""
    label, base_url = platform.label, platform.settings.base_url
    sent = f"{call.method} {base_url}{call.path} found nothing"
    expected = f"{label} answers it at {platform.default_base_url}{call.path}"
    if call.ids:
        named = " or ".join(f"{what} {value!r}" for what, value in call.ids.items())
        return (
            f"{sent}: the {named} may be unknown to {label} (check it, and that the key is for the workspace "
            f"that has it); if every call fails so, the connection's host is wrong ({expected})."
        )
    path, expected_path = urlsplit(base_url).path, platform.base_path
    where = f"under {expected_path}" if expected_path else "right after the host name"
    stray = f", not under {path}" if path != expected_path else ""
    return (
        f"{sent}, and the call names no id: the connection's host or its path is wrong. {expected}: its calls "
        f"live {where}{stray}."
    )


def _json_body(platform: Platform, call: ApiCall, answer: Answer) -> Any:
    try:
        body = json.loads(answer.body)
    except ValueError:
        return _NO_JSON
    except RecursionError:
        body = _TOO_DEEP
    if body is _TOO_DEEP or _deeper_than(body, MAX_JSON_DEPTH, answer.body):
        raise FlowRunsResponseError(
            f"{platform.label} API call '{call.name}' answered HTTP {answer.status} with JSON nested deeper than "
            f"{MAX_JSON_DEPTH} levels, which no platform sends; this provider does not read it. Check that the "
            "connection's host is the platform's API base URL."
        )
    return body


def _deeper_than(value: Any, limit: int, raw: bytes) -> bool:
    if not isinstance(value, dict | list) or raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # cannot be deeper: skip the walk
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def _describe_body(answer: Answer) -> str:
    content = answer.body
    if not content.strip():
        return "an empty body"
    if "html" in answer.headers.get("content-type", "") or content.lstrip()[:1] == b"<":
        title = _TITLE.search(content[:4096])
        named = f" titled {title.group(1).decode(errors='replace').strip()[:80]!r}" if title else ""
        return f"an HTML page{named} (a proxy, gateway or login page?)"
    return f"a body that is not valid JSON ({len(content)} bytes)"


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the platform asked to wait (``Retry-After``: seconds or an HTTP date), or None when it said
    nothing readable. Never raises; may be ``inf``: callers cap it."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = when.timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError, OSError):
            return None
    return None if math.isnan(seconds) else max(0.0, seconds)


def scrub(platform: Platform, text: str) -> str:
    """``text`` with every secret of the connection replaced by ``***``.

    Secrets shorter than Airflow's own masking minimum (5 characters) are left, as Airflow leaves them
    in logs: replacing them would garble every message.
    """
    for secret in platform.secrets():
        if len(secret) >= 5:
            text = text.replace(secret, "***")
    return text


def _scrub_error(platform: Platform, exc: FlowRunsError) -> None:
    exc.args = tuple(scrub(platform, arg) if isinstance(arg, str) else arg for arg in exc.args)
    if isinstance(exc, FlowRunsApiError):
        exc.detail = scrub(platform, exc.detail)


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
    if not call.idempotent and not isinstance(exc, FlowRunsTlsError):  # a TLS mistake reached no platform
        status = getattr(exc, "status", None)
        exc.outcome_unknown = isinstance(exc, FlowRunsResponseError) or status is None or status >= 500


@contextmanager
def translated_errors(platform: Platform, call: ApiCall) -> Iterator[None]:
    """What leaves a call, or the reading of its answer: only the provider's own errors (see
    ``readable_answers``), marked when a start may have happened anyway."""
    try:
        with readable_answers(platform, call.name, outcome_unknown=not call.idempotent):
            yield
    except httpx.TransportError as exc:
        error = _unreachable(platform, call, exc)
        _scrub_error(platform, error)
        raise error from exc
    except (FlowRunsApiError, FlowRunsResponseError) as exc:
        _mark_outcome(call, exc)
        raise


@contextmanager
def readable_answers(platform: Platform, call_name: str, *, outcome_unknown: bool = False) -> Iterator[None]:
    """The provider's errors scrubbed of the connection's secrets, and a raw parsing error (an answer of an
    unexpected shape, JSON too deep for recursive code) turned into a ``FlowRunsResponseError``
    naming the platform and call."""
    try:
        yield
    except FlowRunsError as exc:
        _scrub_error(platform, exc)
        raise
    except _UNREADABLE as exc:
        error = FlowRunsResponseError(
            f"{platform.label} API call '{call_name}' gave an answer this provider cannot read "
            f"({type(exc).__name__}: {scrub(platform, str(exc))[:300]}). Check that the connection's host is the "
            "platform's API base URL."
        )
        error.outcome_unknown = outcome_unknown
        raise error from None


@contextmanager
def reading_body(
    platform: Platform, call_name: str, headers: Mapping[str, str], limit: int, *, keep: bool = True
) -> Iterator[BoundedBody]:
    """A body being read within ``limit`` bytes; passing it, or an encoding never asked for, is the
    provider's own error naming the platform, call and size."""
    try:
        yield BoundedBody(headers, limit, keep=keep)
    except BodyTooLarge as exc:
        stated = f", {exc.declared} declared" if exc.declared is not None else ""
        raise FlowRunsResponseError(
            f"{platform.label} API call '{call_name}' answered with more than {limit} bytes (stopped after "
            f"{exc.seen} decompressed bytes{stated}). Raise the connection's extra max_response_bytes if the "
            "answer is genuine; check the connection's host otherwise."
        ) from None
    except UnknownEncoding as exc:
        raise FlowRunsResponseError(
            f"{platform.label} API call '{call_name}' answered in content-encoding {scrub(platform, str(exc))[:40]!r}, "
            "which this provider did not ask for and does not read."
        ) from None
    except zlib.error:
        raise FlowRunsResponseError(
            f"{platform.label} API call '{call_name}' answered with a compressed body that does not decompress.",
            retryable=True,
        ) from None


def the_run_asked_for(platform: Platform, call: ApiCall, run: FlowRun, flow_id: str | None, run_id: str) -> FlowRun:
    """A read of one run must answer with that run (and, where the caller knows it, of that flow): a task
    is never settled on another run."""
    if run.id != run_id or (flow_id is not None and run.flow_id not in (None, flow_id)):
        asked = f"run {run_id!r}" + (f" of flow {flow_id!r}" if flow_id is not None else "")
        raise FlowRunsResponseError(
            scrub(
                platform,
                f"{platform.label} API call '{call.name}' asked for {asked} and was answered with run {run.id!r} "
                f"of flow {run.flow_id!r}. Check the connection's host: this provider never settles a task on "
                "another run.",
            )
        )
    return run


def found(platform: Platform, run_id: str, run: FlowRun | None) -> FlowRun:
    """A run looked up by listing, for platforms with no call that reads one run."""
    if run is None:
        raise FlowRunsApiError(
            platform=platform.label,
            call="find run",
            status=404,
            detail=f"no run {run_id!r} in the flow's run listing",
            retryable=False,
            hint="Check the run id and the flow id: the flow's runs were read, and this run is not among them.",
        )
    return run
