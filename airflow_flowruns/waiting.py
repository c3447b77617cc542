"""When to stop waiting on a run, what the task does then and what a wait logs on the way: one policy for the
operator, the sensor and the trigger, so the three can never disagree about a run in review or a deadline.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, Self

from airflow.providers.common.compat.sdk import conf

from airflow_flowruns.exceptions import FlowRunFailedError, FlowRunsConfigError, FlowRunTimeoutError
from airflow_flowruns.get_provider_info import DEFAULT_MIN_POLL_INTERVAL
from airflow_flowruns.platforms.base import FlowRun, RunState

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 120.0
"""How long a wait stays silent while the run's state does not change: a log read mid-wait shows within a few
minutes that the wait is alive, and an hour's wait logs a page, not a line per poll."""


class OnReview(StrEnum):
    """What the task does when the run stops for human review."""

    SUCCEED = "succeed"
    """The task succeeds with state ``needs_review`` in its XCom, so a downstream branch can route it."""
    FAIL = "fail"
    WAIT = "wait"
    """Keep waiting until a person finishes the review and the run reaches a final state."""
    AIRFLOW = "airflow"
    """Raise an Airflow Required Action: a person answers it in Airflow, or the review ends in the vendor's app."""

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
    """The task's return value for a settled run, or the error that fails the task; either way the wait's closing
    line first."""
    log.info("%s", closing_line(run))
    if run.state is RunState.SUCCEEDED:
        return run.to_xcom()
    if run.state is RunState.NEEDS_REVIEW:
        if on_review is OnReview.FAIL:
            raise FlowRunFailedError(
                f"{_describe(run)} stopped for human review ({run.status}) and on_review='fail'. "
                "Review it on the platform, or use on_review='succeed', 'wait' or 'airflow'."
            )
        log.info("The task succeeds with state needs_review (on_review=%r).", on_review.value)
        return run.to_xcom()
    if run.state in (RunState.FAILED, RunState.CANCELLED):
        reason = f": {run.error}" if run.error else "."
        raise FlowRunFailedError(f"{_describe(run)} ended {run.state.value} ({run.status}){reason}")
    raise FlowRunTimeoutError(f"{_describe(run)} is still {run.state.value} ({run.status}).")


def closing_line(run: FlowRun) -> str:
    """How the wait ended: the run's state, how long it took and where to see it."""
    if run.state.is_final:
        outcome = f"ended {run.state.value}"
    elif run.state is RunState.NEEDS_REVIEW:
        outcome = "stopped for review"
    else:
        outcome = f"is still {run.state.value}"
    took = run_duration(run)
    after = f" after {spoken(took.total_seconds())}" if took is not None else " (the platform gives no times)"
    return f"{_describe(run, link=False)} {outcome} ({run.status}){after}: {run.url or 'the platform gives no link'}"


def run_duration(run: FlowRun) -> timedelta | None:
    """How long the run took as its platform tells: its own duration, else from its start (or creation) to its
    end, or to now for a run not ended; None where the platform gives no times or its clock disagrees."""
    if run.duration_ms is not None:
        return timedelta(milliseconds=run.duration_ms)
    begun = run.started_at or run.created_at
    if begun is None:
        return None
    ended = run.ended_at or datetime.now(UTC)
    took = ended - (begun if begun.tzinfo else begun.replace(tzinfo=UTC))
    return took if took >= timedelta(0) else None


def spoken(seconds: float) -> str:
    """A duration as a person reads it: ``0.4 s``, ``42 s``, ``4 min 05 s``, ``2 h 07 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


class InfoLog(Protocol):
    """Where a wait logs: the task's, the hook's or the trigger's logger, stdlib or structlog."""

    def info(self, msg: str, /, *args: Any) -> object: ...


class WaitProgress:
    """What a wait logs while it waits: each state of the run once, when first seen, and a heartbeat when
    nothing new was logged for ``HEARTBEAT_SECONDS``, so the log shows the wait alive without a line per poll.

    Every line but a wait's first says how long it has waited (a sensor rescheduled between pokes starts a new
    wait at each poke, so its first line claims no time waited).
    """

    def __init__(self, logger: InfoLog) -> None:
        self._log = logger
        self._began = self._said = time.monotonic()
        self._seen: tuple[RunState, str] | None = None

    def seen(self, run: FlowRun, next_check: float | None) -> None:
        """A poll read ``run``: its state when it changed, else a heartbeat when one is due."""
        first = self._seen is None
        if (run.state, run.status) != self._seen:
            self._seen = (run.state, run.status)
            self._say(f"{_name(run)} is {run.status} ({run.state.value})", next_check, waited=not first)
        elif self._heartbeat_due():
            self._say(f"{_name(run)} is still {run.status} ({run.state.value})", next_check)

    def heartbeat(self, what: str, next_check: float | None) -> None:
        """Nothing new was read: say ``what`` the wait is doing, when a heartbeat is due."""
        if self._heartbeat_due():
            self._say(what, next_check)

    def _heartbeat_due(self) -> bool:
        return time.monotonic() - self._said >= HEARTBEAT_SECONDS

    def _say(self, what: str, next_check: float | None, *, waited: bool = True) -> None:
        self._said = time.monotonic()
        line = what
        if waited:
            line += f", {spoken(self._said - self._began)} into the wait"
        if next_check is not None:
            line += f"; next check in {spoken(max(0.0, next_check))}"
        self._log.info("%s.", line)


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


def _describe(run: FlowRun, *, link: bool = True) -> str:
    url = f" ({run.url})" if run.url and link else ""
    return f"{run.platform} run {run.id!r} of flow {run.flow_id!r}{url}"


def _name(run: FlowRun) -> str:
    return f"{run.platform} run {run.id}"
