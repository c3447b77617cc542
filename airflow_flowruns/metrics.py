"""The provider's metrics, sent through Airflow's own ``Stats``: StatsD, Datadog or OpenTelemetry, as the
deployment's ``[metrics]`` section configures, from whichever process does the work (a worker, the triggerer).

Every name is ``flowruns.<platform>.<connection>.<what>`` (Airflow adds its ``statsd_prefix``), and carries the
same as tags for backends that take them. See ``METRICS`` for the list the operations page shows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import Stats

if TYPE_CHECKING:
    from airflow_flowruns.platforms.base import FlowRun, Platform, RunState

METRICS = {
    "runs_started": "counter: runs the provider started",
    "runs_settled.<state>": (
        "counter: runs seen reaching a final state (succeeded, failed, cancelled), once each; a batch's runs by "
        "the try that started them, when it reports"
    ),
    "time_to_settle": "timer: from a run's creation to its final state, for the runs counted above",
    "requests.<outcome>": "counter: requests by answer (2xx, 3xx, 4xx, 429, 5xx, or no_answer)",
    "rate_limit_wait": "timer: time a request waited for its turn under the connection's rate limit",
    "credits": "gauge (delta): credits the platform reported for the runs counted in runs_settled",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _name(platform: str, conn_id: str, what: str) -> str:
    return f"flowruns.{platform}.{_UNSAFE.sub('_', conn_id)[:100]}.{what}"


def _tags(platform: str, conn_id: str, **more: str) -> dict[str, str]:
    return {"platform": platform, "conn_id": conn_id, **more}


def answered(platform: str, conn_id: str, status: int | None) -> None:
    """One request answered with ``status``, or None for a request that got no answer."""
    outcome = "no_answer" if status is None else "429" if status == 429 else f"{status // 100}xx"
    Stats.incr(_name(platform, conn_id, f"requests.{outcome}"), tags=_tags(platform, conn_id, outcome=outcome))


@contextmanager
def unanswered_on(platform: Platform, *errors: type[BaseException]) -> Iterator[None]:
    """Count a request that ends with one of ``errors`` (no answer: refused, reset, timed out) and re-raise."""
    try:
        yield
    except errors:
        answered(platform.name, platform.settings.conn_id, None)
        raise


def waited_for_turn(platform: str, conn_id: str, seconds: float) -> None:
    """A request held back by the connection's rate limit for ``seconds`` (not sent when it was not held)."""
    if seconds > 0.001:
        Stats.timing(
            _name(platform, conn_id, "rate_limit_wait"), timedelta(seconds=seconds), tags=_tags(platform, conn_id)
        )


def started(platform: str, conn_id: str, runs: int = 1) -> None:
    Stats.incr(_name(platform, conn_id, "runs_started"), count=runs, tags=_tags(platform, conn_id))


def settled(run: FlowRun, conn_id: str) -> None:
    """A run seen reaching its final state, as a task, a sensor or a trigger reads it: see ``settled_as``."""
    settled_as(run.platform, conn_id, run.state, run.created_at, run.ended_at, credits_of(run.usage))


def settled_as(
    platform: str,
    conn_id: str,
    state: RunState,
    created_at: datetime | None,
    ended_at: datetime | None,
    credits: float | None,
) -> None:
    """One run reaching its final state: counted by state, timed from its creation to its end where both are
    known, and its credits added where reported. Nothing for a state that is not final. Plain values, not a
    ``FlowRun``: a batch counts its documents from the listing and the manifest, without reading each run."""
    if not state.is_final:
        return
    Stats.incr(
        _name(platform, conn_id, f"runs_settled.{state.value}"), tags=_tags(platform, conn_id, state=state.value)
    )
    if created_at is not None and ended_at is not None and ended_at >= created_at:
        Stats.timing(_name(platform, conn_id, "time_to_settle"), ended_at - created_at, tags=_tags(platform, conn_id))
    if credits:
        Stats.gauge(_name(platform, conn_id, "credits"), credits, delta=True, tags=_tags(platform, conn_id))


def credits_of(usage: object) -> float | None:
    """The credits a run's ``usage`` reports (Extend), else None."""
    value = getattr(usage, "credits", None)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
