"""Which failures are retried, how long to wait between attempts, and pacing after a 429.

Every wait is bounded: by ``retry_max_wait`` whatever ``Retry-After`` says, and in the worker by the
time left before the task's deadline (``until``); the triggerer bounds a poll with its deadline
itself (``FlowRunTrigger``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpx
from tenacity import RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter
from tenacity.stop import stop_base

from airflow_flowruns import metrics
from airflow_flowruns.client.body import Answer
from airflow_flowruns.client.errors import decode, retry_after
from airflow_flowruns.client.options import HttpOptions
from airflow_flowruns.client.ratelimit import RequestScheduler
from airflow_flowruns.exceptions import FlowRunsApiError, FlowRunsResponseError
from airflow_flowruns.platforms.base import ApiCall, Platform

log = logging.getLogger(__name__)

_task_deadline: ContextVar[float | None] = ContextVar("flowruns_task_deadline", default=None)


@contextmanager
def until(deadline: float | None) -> Iterator[None]:
    """Calls made inside wait between attempts no longer than the time left before ``deadline`` (unix
    seconds), and make no new attempt once it has passed."""
    token = _task_deadline.set(deadline)
    try:
        yield
    finally:
        _task_deadline.reset(token)


def time_left() -> float | None:
    deadline = _task_deadline.get()
    return None if deadline is None else deadline - time.time()


class WaitRetryAfter:
    """Exponential backoff with jitter, unless the platform said how long to wait; capped either way."""

    def __init__(self, options: HttpOptions) -> None:
        self._backoff = wait_exponential_jitter(initial=options.retry_min_wait, max=options.retry_max_wait)
        self._cap = options.retry_max_wait

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, FlowRunsApiError) and exc.retry_after is not None:
            wait = min(exc.retry_after, self._cap)
        else:
            wait = float(self._backoff(state))
        left = time_left()
        return wait if left is None else max(0.0, min(wait, left))


class PastDeadline(stop_base):
    """Stop where no attempt after the wait would start with time left before the task's deadline."""

    def __call__(self, retry_state: RetryCallState) -> bool:
        left = time_left()
        return left is not None and left <= retry_state.upcoming_sleep


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
        if isinstance(exc, FlowRunsApiError) and exc.status == 429:  # the pause the platform asked for
            metrics.waited_for_turn(platform.name, platform.settings.conn_id, wait)
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
        "wait": WaitRetryAfter(options),
        "stop": stop_after_attempt(options.max_retries + 1) | PastDeadline(),
        "before_sleep": log_retry,
        "reraise": True,
    }


def decode_and_pace(
    scheduler: RequestScheduler, options: HttpOptions, platform: Platform, call: ApiCall, answer: Answer
) -> Any:
    """Decode, after telling the connection's scheduler how the platform answered: a 429 holds every request
    on the connection for as long as the platform asked, up to ``retry_max_wait``, and lowers its rate."""
    pace(scheduler, options, platform, answer.status, answer.headers)
    return decode(platform, call, answer)


def pace(
    scheduler: RequestScheduler, options: HttpOptions, platform: Platform, status: int, headers: Mapping[str, str]
) -> None:
    """Tell the connection's scheduler how the platform answered (see ``decode_and_pace``), and count it."""
    metrics.answered(platform.name, platform.settings.conn_id, status)
    scheduler.answered(status, retry_after(headers) if status == 429 else None, options.retry_max_wait)
