"""When to stop waiting on a run and what the task does then: one policy for the operator, the sensor
and the trigger, so the three can never disagree about a run in review or a deadline.
"""

from __future__ import annotations

import logging
import math
import time
from enum import StrEnum
from typing import Any, Self

from airflow.providers.common.compat.sdk import conf

from airflow_flowruns.exceptions import FlowRunFailedError, FlowRunsConfigError, FlowRunTimeoutError
from airflow_flowruns.get_provider_info import DEFAULT_MIN_POLL_INTERVAL
from airflow_flowruns.platforms.base import FlowRun, RunState

log = logging.getLogger(__name__)


class OnReview(StrEnum):
    """What the task does when the run stops for human review."""

    SUCCEED = "succeed"
    """The task succeeds with state ``needs_review`` in its XCom, so a downstream branch can route it."""
    FAIL = "fail"
    WAIT = "wait"
    """Keep waiting until a person finishes the review and the run reaches a final state."""

    @classmethod
    def parse(cls, value: str | Self) -> Self:
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in cls)
            raise FlowRunsConfigError(f"on_review={value!r} is not one of {choices}.") from None


def is_settled(run: FlowRun, on_review: OnReview) -> bool:
    """Whether waiting is over: a final state, or review when the policy does not wait it out."""
    return run.state.is_final or (run.state is RunState.NEEDS_REVIEW and on_review is not OnReview.WAIT)


def check_poll_interval(poll_interval: float) -> float:
    if not isinstance(poll_interval, int | float) or not math.isfinite(poll_interval) or poll_interval <= 0:
        raise FlowRunsConfigError(f"poll_interval must be a positive number of seconds, not {poll_interval!r}.")
    floor = conf.getfloat("flowruns", "min_poll_interval", fallback=DEFAULT_MIN_POLL_INTERVAL)
    if poll_interval < floor:
        raise FlowRunsConfigError(
            f"poll_interval must be at least {floor:g} s, not {poll_interval!r}: faster polling only spends the "
            "platform's rate limit ([flowruns] min_poll_interval sets this floor)."
        )
    return float(poll_interval)


def check_timeout(timeout: float) -> float:
    """A positive, finite number of seconds; checked when the DAG is parsed."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
        raise FlowRunsConfigError(
            f"timeout must be a positive number of seconds, not {timeout!r}: the deadline would be in the past."
        )
    return float(timeout)


def deadline_after(timeout: float) -> float:
    """An absolute wall-clock deadline, computed once, so a restarted trigger keeps the original one."""
    return time.time() + check_timeout(timeout)


def finish(run: FlowRun, on_review: OnReview) -> dict[str, Any]:
    """The task's return value for a settled run, or the error that fails the task."""
    if run.state is RunState.SUCCEEDED:
        return run.to_xcom()
    if run.state is RunState.NEEDS_REVIEW:
        if on_review is OnReview.FAIL:
            raise FlowRunFailedError(
                f"{_describe(run)} stopped for human review ({run.status}) and on_review='fail'. "
                "Review it on the platform, or use on_review='succeed' or 'wait'."
            )
        log.info("%s needs review (%s); the task succeeds with state needs_review.", _describe(run), run.status)
        return run.to_xcom()
    if run.state in (RunState.FAILED, RunState.CANCELLED):
        reason = f": {run.error}" if run.error else "."
        raise FlowRunFailedError(f"{_describe(run)} ended {run.state.value} ({run.status}){reason}")
    raise FlowRunTimeoutError(f"{_describe(run)} is still {run.state.value} ({run.status}).")


def timed_out(run: FlowRun | None, run_id: str, platform: str, *, cancelled: bool, can_cancel: bool) -> Exception:
    """The error for a deadline reached, saying what became of the remote run."""
    where = f"run {run_id!r} on {platform}" + (f", last seen {run.status}" if run else "")
    if cancelled:
        fate = "It was cancelled on the platform."
    elif can_cancel:
        fate = "It was left running on the platform (cancel_on_timeout=False)."
    else:
        fate = f"{platform} has no cancel call, so the run keeps going on the platform side."
    return FlowRunTimeoutError(f"Deadline reached before {where} settled. {fate} Raise timeout if runs take this long.")


def _describe(run: FlowRun) -> str:
    url = f" ({run.url})" if run.url else ""
    return f"{run.platform} run {run.id!r} of flow {run.flow_id!r}{url}"
