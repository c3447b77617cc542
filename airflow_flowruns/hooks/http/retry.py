"""Which failures are retried, how long to wait between attempts, and pacing after a 429."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
from tenacity import RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from airflow_flowruns.exceptions import FlowRunsApiError, FlowRunsResponseError
from airflow_flowruns.hooks.http.errors import decode, retry_after
from airflow_flowruns.hooks.http.options import HttpOptions
from airflow_flowruns.hooks.ratelimit import RequestScheduler
from airflow_flowruns.platforms.base import ApiCall, Platform

log = logging.getLogger(__name__)


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


def is_retryable(call: ApiCall) -> Callable[[BaseException], bool]:
    def check(exc: BaseException) -> bool:
        if isinstance(exc, FlowRunsApiError):
            return exc.retryable and (call.idempotent or exc.status == 429)
        if isinstance(exc, FlowRunsResponseError):
            return exc.retryable and call.idempotent
        if isinstance(exc, httpx.TransportError):
            return call.idempotent or isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
        return False

    return check


def retry_policy(platform: Platform, options: HttpOptions, call: ApiCall) -> dict[str, Any]:
    """Tenacity's arguments for one call, the same for both clients."""

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
        "retry": retry_if_exception(is_retryable(call)),
        "wait": _WaitRetryAfter(options),
        "stop": stop_after_attempt(options.max_retries + 1),
        "before_sleep": log_retry,
        "reraise": True,
    }


def decode_and_pace(scheduler: RequestScheduler, platform: Platform, call: ApiCall, response: httpx.Response) -> Any:
    """Decode, after telling the connection's scheduler how the platform answered: a 429 holds every request
    on the connection for as long as the platform asked and lowers its rate."""
    status = response.status_code
    scheduler.answered(status, retry_after(response) if status == 429 else None)
    return decode(platform, call, response)
