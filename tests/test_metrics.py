"""The provider's metrics: what each process sends through Airflow's ``Stats`` for the work it does, recorded
here in place of the deployment's backend (``make e2e-review`` checks a StatsD listener receives them)."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import Context
from airflow.sdk.exceptions import TaskDeferred
from pytest_mock import MockerFixture

from airflow_flowruns import metrics
from airflow_flowruns.batch.census import Seen
from airflow_flowruns.batch.counted import SettledCounter, settled_counter
from airflow_flowruns.operators.flow_run import FlowRunOperator
from airflow_flowruns.platforms.base import RunState
from airflow_flowruns.platforms.extend.emulator import EXTEND_INVOICE_WORKFLOW
from airflow_flowruns.platforms.stackai.emulator import STACKAI_FLOW, STACKAI_ORG
from airflow_flowruns.platforms.tableflow.emulator import (
    TABLEFLOW_FAILING_FLOW,
    TABLEFLOW_REVIEW_FLOW,
    TABLEFLOW_SMALL_FILE_FLOW,
)
from support.emulator import Emulator, set_connection
from support.runs import run_trigger
from support.state_store import MemoryStateStore
from test_batch_operator import (
    HELD,
    archive,
    batch,
    context_for,
    end_held,
    fail_a_first_try,
    finish,
    finish_from,
)


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


def settled(stats: Recorder, prefix: str) -> dict[str, int]:
    """``runs_settled.<state>`` by state, as counted so far."""
    head = prefix + "runs_settled."
    return {name.removeprefix(head): count for name, count in stats.counts.items() if name.startswith(head)}


def next_second() -> None:
    """Sleep into the next whole second: TableFlow dates runs in whole seconds, and without a ledger a retry counts
    the runs created from the second it began (a real retry begins seconds after its earlier try's runs at least)."""
    time.sleep(1.01 - time.time() % 1)


@pytest.mark.parametrize("kept", [True, False], ids=["ledger", "no ledger"])
def test_a_batch_counts_each_document_run_once_with_its_time_to_settle(
    tableflow_conn: str, emulator: Emulator, tmp_path: Path, mocker: MockerFixture, stats: Recorder, kept: bool
) -> None:
    """Three documents, one of which fails while the batch waits in the triggerer: the try counts each run once
    as it reports (two succeeded, one failed), each with its time to settle; TableFlow reports no credits."""
    emulator.scenario(TABLEFLOW_SMALL_FILE_FLOW, processing_seconds=HELD)
    store = MemoryStateStore() if kept else None
    op = batch(
        tableflow_conn, TABLEFLOW_SMALL_FILE_FLOW, f"{archive(tmp_path / 'a', 3)}/", deferrable=True, max_failed=1
    )
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context_for(mocker, store=store))
    end_held(emulator, failing=1)
    prefix = f"flowruns.tableflow.{tableflow_conn}."
    assert settled(stats, prefix) == {}, "nothing is counted before the try reports"

    result = finish_from(op, context_for(mocker, store=store), deferred.value)
    assert result["counts"] == {"succeeded": 2, "failed": 1}
    assert settled(stats, prefix) == {"succeeded": 2, "failed": 1}
    assert stats.tags[prefix + "runs_settled.failed"] == {
        "platform": "tableflow",
        "conn_id": tableflow_conn,
        "state": "failed",
    }
    timings = stats.timings[prefix + "time_to_settle"]
    assert len(timings) == 3 and all(timedelta(0) <= taken < timedelta(seconds=30) for taken in timings)
    assert prefix + "credits" not in stats.gauges


@pytest.mark.parametrize("landed", [True, False], ids=["read for landing", "as listed"])
def test_an_extend_batch_adds_each_document_s_credits(
    emulator: Emulator,
    tmp_path: Path,
    mocker: MockerFixture,
    monkeypatch: pytest.MonkeyPatch,
    stats: Recorder,
    landed: bool,
) -> None:
    """Extend's batch start names no run, so the ledger's documents say which runs the try started; each one's
    credits (two per one-page PDF) come from its manifest item, whether the run was read for its landing or not."""
    conn = set_connection(monkeypatch, "extend_counted", "extend", emulator.url)
    emulator.scenario(EXTEND_INVOICE_WORKFLOW, platform="extend", processing_seconds=0.1)
    where = {"outputs_to": str(tmp_path / "out")} if landed else {"manifest_to": str(tmp_path / "m.json")}
    op = batch(conn, EXTEND_INVOICE_WORKFLOW, f"{archive(tmp_path / 'a', 3)}/", deferrable=True, **where)
    result = finish(op, context_for(mocker, store=MemoryStateStore()))

    prefix = f"flowruns.extend.{conn}."
    assert result["counts"] == {"succeeded": 3} and settled(stats, prefix) == {"succeeded": 3}
    assert stats.counts[prefix + "runs_started"] == 3 and len(stats.timings[prefix + "time_to_settle"]) == 3
    assert stats.gauges[prefix + "credits"] == [2.0] * 3 and result["usage"]["credits"] == 6.0


@pytest.mark.parametrize("kept", [True, False], ids=["ledger", "no ledger"])
def test_a_second_try_of_a_settled_batch_counts_nothing_again(
    tableflow_conn: str, emulator: Emulator, tmp_path: Path, mocker: MockerFixture, stats: Recorder, kept: bool
) -> None:
    """The task cleared after its first try counted every run: the second try follows them and counts none."""
    emulator.scenario(TABLEFLOW_SMALL_FILE_FLOW, processing_seconds=0.1)
    store = MemoryStateStore() if kept else None
    op = batch(tableflow_conn, TABLEFLOW_SMALL_FILE_FLOW, f"{archive(tmp_path / 'a', 4)}/", deferrable=True)
    finish(op, context_for(mocker, store=store))
    prefix = f"flowruns.tableflow.{tableflow_conn}."
    assert settled(stats, prefix) == {"succeeded": 4} and len(stats.timings[prefix + "time_to_settle"]) == 4

    if not kept:
        next_second()  # with a ledger the retry begins at once: no clock decides
    result = finish(op, context_for(mocker, try_number=2, store=store))
    assert result["counts"] == {"succeeded": 4} and result["started"] == 0 and len(emulator.runs()) == 4
    assert settled(stats, prefix) == {"succeeded": 4} and len(stats.timings[prefix + "time_to_settle"]) == 4


@pytest.mark.parametrize("kept", [True, False], ids=["ledger", "no ledger"])
def test_a_retry_counts_the_runs_it_started_and_not_the_earlier_try_s(
    tableflow_conn: str, emulator: Emulator, tmp_path: Path, mocker: MockerFixture, stats: Recorder, kept: bool
) -> None:
    """A first try whose document failed counts its four runs; the retry runs that document again and counts
    that one run, not the three succeeded runs the first try started and counted."""
    store = MemoryStateStore() if kept else None
    op = batch(tableflow_conn, TABLEFLOW_SMALL_FILE_FLOW, f"{archive(tmp_path / 'a', 4)}/", deferrable=True)
    fail_a_first_try(op, emulator, context_for(mocker, store=store), failing=1, documents=4)
    prefix = f"flowruns.tableflow.{tableflow_conn}."
    assert settled(stats, prefix) == {"succeeded": 3, "failed": 1}

    if not kept:
        next_second()  # with a ledger the retry begins at once: no clock decides
    result = finish(op, context_for(mocker, try_number=2, store=store))
    assert result["counts"] == {"succeeded": 4} and result["started"] == 1 and len(emulator.runs()) == 5
    assert settled(stats, prefix) == {"succeeded": 4, "failed": 1}
    assert len(stats.timings[prefix + "time_to_settle"]) == 5


def test_a_stackai_batch_counts_each_run_once_from_its_start(
    emulator: Emulator, tmp_path: Path, mocker: MockerFixture, monkeypatch: pytest.MonkeyPatch, stats: Recorder
) -> None:
    """StackAI's start answers with the settled run, which the start counts: the report counts nothing more."""
    conn = set_connection(
        monkeypatch, "stackai_counted", "stackai", emulator.url, org_id=STACKAI_ORG, flow_id=STACKAI_FLOW
    )
    docs = archive(tmp_path / "a", 3)
    op = batch(conn, STACKAI_FLOW, f"{docs}/", file_field="doc-0", inputs={"in-0": "Check"}, deferrable=True)
    assert op.execute(context_for(mocker))["counts"] == {"succeeded": 3}
    assert settled(stats, f"flowruns.stackai.{conn}.") == {"succeeded": 3}


def test_without_a_ledger_a_retry_counts_the_runs_created_from_the_second_it_began(mocker: MockerFixture) -> None:
    """The clock rule: from the whole second the try began (TableFlow's precision), nothing earlier, and nothing
    undated; no start carried counts nothing; the first try counts every run; a ledger decides alone."""
    hook = mocker.MagicMock(flowruns_conn_id="c", platform=mocker.MagicMock(synchronous=False))
    began = datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)
    retry = settled_counter(hook, 2, "2026-03-01T12:00:05.700000+00:00", None)
    assert retry is not None and retry.began == began

    def seen(created: datetime | None, run_id: str = "run-1") -> Seen:
        return Seen(run_id, RunState.SUCCEEDED, "completed", created)

    assert retry.started("a", seen(began)) and retry.started("a", seen(began + timedelta(minutes=5)))
    assert not retry.started("a", seen(began - timedelta(seconds=1))) and not retry.started("a", seen(None))
    assert not SettledCounter("tableflow", "c", 2, None).started("a", seen(began))
    assert SettledCounter("tableflow", "c", 1, None).started("a", seen(None))
    ledger = SettledCounter("extend", "c", 2, began, {"a": "", "b": "run-2"})
    assert ledger.started("a", seen(began - timedelta(hours=1))) and ledger.started("b", seen(None, "run-2"))
    assert not ledger.started("b", seen(began)) and not ledger.started("c", seen(began))
