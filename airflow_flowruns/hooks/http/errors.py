"""An answer or a failure of one call, turned into the provider's own error naming platform and call."""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from airflow_flowruns.exceptions import (
    FlowRunsApiError,
    FlowRunsAuthError,
    FlowRunsResponseError,
)
from airflow_flowruns.platforms.base import ApiCall, FlowRun, Platform

_NO_JSON = object()


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
            retry_after=retry_after(response),
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


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, when.timestamp() - time.time()) if when else None


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


@contextmanager
def translated_errors(platform: Platform, call: ApiCall) -> Iterator[None]:
    """What leaves a call, retries done: the provider's own error, marked when a start may have happened."""
    try:
        yield
    except httpx.TransportError as exc:
        raise _unreachable(platform, call, exc) from exc
    except (FlowRunsApiError, FlowRunsResponseError) as exc:
        _mark_outcome(call, exc)
        raise


def found(platform: Platform, run_id: str, run: FlowRun | None) -> FlowRun:
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
