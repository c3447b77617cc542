"""The provider's metrics: what each process sends through Airflow's ``Stats`` for the work it does, recorded
here in place of the deployment's backend (``make e2e-review`` checks a StatsD listener receives them)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import Context
from airflow.sdk.exceptions import TaskDeferred

from airflow_flowruns import metrics
from airflow_flowruns.operators.flow_run import FlowRunOperator
from airflow_flowruns.platforms.extend.emulator import EXTEND_INVOICE_WORKFLOW
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_FAILING_FLOW, TABLEFLOW_REVIEW_FLOW
from support.emulator import Emulator, set_connection
from support.runs import run_trigger


class Recorder:
    """Stand-in for Airflow's ``Stats``: every call, by metric name."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.timings: dict[str, list[timedelta]] = {}
        self.gauges: dict[str, list[float]] = {}
        self.tags: dict[str, dict[str, Any]] = {}

    def incr(self, stat: str, count: int = 1, rate: float = 1, *, tags: dict[str, Any] | None = None) -> None:
        self.counts[stat] += count
        self.tags[stat] = tags or {}

    def timing(self, stat: str, dt: timedelta, *, tags: dict[str, Any] | None = None) -> None:
        self.timings.setdefault(stat, []).append(dt)

    def gauge(self, stat: str, value: float, rate: float = 1, delta: bool = False, **kw: Any) -> None:
        assert delta, "credits add up: a gauge sent as a delta"
        self.gauges.setdefault(stat, []).append(value)


@pytest.fixture
def stats(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(metrics, "Stats", recorder)
    return recorder


def one_pdf(conn_id: str, flow_id: str, pdf: Path, field: str = "document", **kwargs: Any) -> FlowRunOperator:
    return FlowRunOperator(
        task_id="t", flowruns_conn_id=conn_id, flow_id=flow_id, files={field: pdf}, poll_interval=0.05, **kwargs
    )


def test_a_run_in_the_worker_counts_its_start_its_requests_and_its_end(
    tableflow_conn: str, emulator: Emulator, pdf: Path, context: Context, stats: Recorder
) -> None:
    emulator.scenario(TABLEFLOW_REVIEW_FLOW, processing_seconds=0.1)  # no review: it succeeds
    one_pdf(tableflow_conn, TABLEFLOW_REVIEW_FLOW, pdf, deferrable=False).execute(context)
    prefix = f"flowruns.tableflow.{tableflow_conn}."
    sent = sum(1 for r in emulator.requests() if not r["path"].startswith("/_emulator"))
    assert stats.counts[prefix + "runs_started"] == 1 and stats.counts[prefix + "runs_settled.succeeded"] == 1
    assert stats.counts[prefix + "requests.2xx"] == sent
    assert stats.tags[prefix + "requests.2xx"] == {"platform": "tableflow", "conn_id": tableflow_conn, "outcome": "2xx"}
    (settle_time,) = stats.timings[prefix + "time_to_settle"]
    assert timedelta(0) <= settle_time < timedelta(seconds=30)  # TableFlow times runs in whole seconds


def test_the_trigger_counts_the_end_it_sees_and_its_polls(
    tableflow_conn: str, emulator: Emulator, pdf: Path, context: Context, stats: Recorder
) -> None:
    op = one_pdf(tableflow_conn, TABLEFLOW_FAILING_FLOW, pdf, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    before = stats.counts.copy()
    run_trigger(deferred.value.trigger)
    prefix = f"flowruns.tableflow.{tableflow_conn}."
    assert stats.counts[prefix + "runs_settled.failed"] == 1 and before[prefix + "runs_settled.failed"] == 0
    assert stats.counts[prefix + "requests.2xx"] > before[prefix + "requests.2xx"]


def test_429s_no_answers_and_credits(
    emulator: Emulator, pdf: Path, context: Context, stats: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = set_connection(monkeypatch, "extend_m", "extend", emulator.url, retry_min_wait=0.05, retry_max_wait=0.2)
    emulator.scenario(EXTEND_INVOICE_WORKFLOW, "extend", processing_seconds=0.1)
    emulator.fault("/workflow_runs/", 429, '{"error": "slow down"}', method="GET", headers={"Retry-After": "0.2"})
    emulator.fault("/workflow_runs/", 0, method="GET", kind="drop")
    one_pdf(conn, EXTEND_INVOICE_WORKFLOW, pdf, field="file", deferrable=False).execute(context)
    prefix = f"flowruns.extend.{conn}."
    assert stats.counts[prefix + "requests.429"] == 1 and stats.counts[prefix + "requests.no_answer"] == 1
    assert sum(stats.timings[prefix + "rate_limit_wait"], timedelta()) >= timedelta(seconds=0.1)
    (credits,) = stats.gauges[prefix + "credits"]
    assert credits > 0


def test_names_keep_to_the_characters_statsd_takes() -> None:
    assert metrics._name("extend", "team a/prod:1", "runs_started") == "flowruns.extend.team_a_prod_1.runs_started"
