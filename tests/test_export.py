"""FlowRunsExportOperator: one JSON Lines object per data interval, replaced whole on re-run."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.providers.common.compat.sdk import Context
from pytest_mock import MockerFixture

from airflow_flowruns.client import FlowRunsClient
from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.operators.export import FlowRunsExportOperator
from airflow_flowruns.platforms.base import FlowRun
from airflow_flowruns.platforms.extend.emulator import EXTEND_INVOICE_WORKFLOW
from airflow_flowruns.platforms.start import StartRequest
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_REVIEW_FLOW
from airflow_flowruns.review.register import register_key
from support.airflow import dags_test
from support.emulator import API_KEY, Emulator, set_connection
from support.runs import FLOW_RUN_XCOM_KEYS, RECONCILIATION_FLOW

DAY = datetime(2026, 3, 1, tzinfo=UTC)


def seed(emulator: Emulator, days: int = 3, per_day: int = 24, **scenario: Any) -> list[str]:
    """``per_day`` runs a day, evenly spaced from DAY 00:00, so one sits exactly on every day boundary."""
    body = {
        "platform": "tableflow",
        "flow_id": RECONCILIATION_FLOW,
        "count": days * per_day,
        "created_from": DAY.timestamp(),
        "created_to": (DAY + timedelta(days=days)).timestamp(),
        "scenario": {"processing_seconds": 0, **scenario},
    }
    return emulator.control.post("/seed", json=body).json()["ids"]


def export(conn_id: str, path: Path, day: int, **kwargs: Any) -> dict[str, Any]:
    op = FlowRunsExportOperator(task_id="export", flowruns_conn_id=conn_id, destination=f"file://{path}", **kwargs)
    start = pendulum.instance(DAY + timedelta(days=day))
    return op.execute(Context(data_interval_start=start, data_interval_end=start.add(days=1)))


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_writes_exactly_the_runs_of_the_interval(tableflow_conn: str, emulator: Emulator, tmp_path: Path) -> None:
    ids = seed(emulator)
    target = tmp_path / "out" / "day1.jsonl"
    result = export(tableflow_conn, target, day=1)
    written = rows(target)
    assert result == {"path": f"file://{target}", "rows": 24}
    assert [row["id"] for row in written] == ids[24:48][::-1]
    assert written[-1]["created_at"] == "2026-03-02T00:00:00Z", "a run exactly at the start is in"
    assert ids[48] not in {row["id"] for row in written}, "a run exactly at the end is out"
    assert set(written[0]) == FLOW_RUN_XCOM_KEYS | {"review"}
    assert written[0]["review"] is None, "nobody reviewed these runs"


def test_extend_rows_carry_each_runs_usage_from_the_listing(
    emulator: Emulator, tmp_path: Path, pdf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Extend's list items (``WorkflowRunSummary``) carry ``usage`` and ``files``: a row has the run's credits and
    pages without reading the run in full."""
    conn = set_connection(monkeypatch, "extend_export", "extend", emulator.url)
    started = FlowRunsHook(conn).start_run(StartRequest(flow_id=EXTEND_INVOICE_WORKFLOW, files={"file": pdf}))
    emulator.set_status(started.id, "PROCESSED")
    emulator.clear_requests()
    target = tmp_path / "extend.jsonl"
    now = pendulum.now("UTC")
    op = FlowRunsExportOperator(task_id="export", flowruns_conn_id=conn, destination=f"file://{target}")
    op.execute(Context(data_interval_start=now.subtract(hours=1), data_interval_end=now.add(hours=1)))
    (row,) = rows(target)
    assert (row["id"], row["usage"]) == (started.id, {"credits": 2.0, "pages": 1, "tokens": None})
    assert [r["path"] for r in emulator.requests()] == ["/workflow_runs"], "from the listing alone"


def keep_review(monkeypatch: pytest.MonkeyPatch, platform: str, run_id: str, entry: dict[str, Any]) -> None:
    """The register entry a reviewing task would have written, served by Airflow's environment-variable secrets
    backend, which ``Variable.get`` asks first."""
    monkeypatch.setenv(f"AIRFLOW_VAR_{register_key(platform, run_id).upper()}", json.dumps(entry))


def test_rows_say_who_reviewed_in_airflow_or_in_the_vendors_app(
    emulator: Emulator, tmp_path: Path, pdf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = set_connection(monkeypatch, "extend_reviews", "extend", emulator.url)
    emulator.scenario(EXTEND_INVOICE_WORKFLOW, platform="extend", processing_seconds=600)
    hook = FlowRunsHook(conn)
    request = StartRequest(flow_id=EXTEND_INVOICE_WORKFLOW, files={"file": pdf})
    in_airflow, in_extend, nobody, running = (hook.start_run(request).id for _ in range(4))
    emulator.set_status(in_airflow, "NEEDS_REVIEW")
    emulator.set_status(in_extend, "NEEDS_REVIEW")
    emulator.set_status(in_extend, "PROCESSED")  # approved in Extend's app
    emulator.set_status(nobody, "PROCESSED")
    decided = {"where": "airflow", "decision": "reject", "by": "rita", "at": "2026-12-01T10:00:00+00:00", "task": {}}
    for run_id in (in_airflow, running):  # a running run is never looked up: Airflow asks about none
        keep_review(monkeypatch, "extend", run_id, decided)
    target = tmp_path / "reviews.jsonl"
    now = pendulum.now("UTC")
    interval = Context(data_interval_start=now.subtract(hours=1), data_interval_end=now.add(hours=1))
    FlowRunsExportOperator(task_id="export", flowruns_conn_id=conn, destination=f"file://{target}").execute(interval)
    reviews = {row["id"]: row["review"] for row in rows(target)}
    assert reviews[in_airflow] == decided
    assert reviews[in_extend] == {
        "where": "extend",
        "decision": "succeeded",
        "by": "reviewer@example.com",
        "at": None,
        "task": None,
    }
    assert reviews[nobody] is None and reviews[running] is None

    FlowRunsExportOperator(
        task_id="export", flowruns_conn_id=conn, destination=f"file://{target}", airflow_reviews=False
    ).execute(interval)
    reviews = {row["id"]: row["review"] for row in rows(target)}
    assert reviews[in_airflow] is None and reviews[in_extend]["by"] == "reviewer@example.com"


@pytest.mark.parametrize("run_id", ["7c1e0f3a-9b2d-4e55-8f00-1a2b3c4d5e6f", "workflow_run_K6Gm-x_9"])
def test_a_plain_run_id_names_its_register_entry(run_id: str) -> None:
    assert register_key("extend", run_id) == f"flowruns_review.extend.{run_id}"


@pytest.mark.parametrize("run_id", ["run/1", "run 1", "ü", "x" * 201, ""])
def test_any_other_run_id_is_hashed_into_a_key_every_backend_takes(run_id: str) -> None:
    key = register_key("noxus", run_id)
    assert re.fullmatch(r"flowruns_review\.noxus\.h-[0-9a-f]{40}", key)
    assert key != register_key("noxus", run_id + "2")


def test_states_filter_and_empty_interval(tableflow_conn: str, emulator: Emulator, tmp_path: Path) -> None:
    seed(emulator, days=1)
    assert export(tableflow_conn, tmp_path / "failed.jsonl", day=0, states=["failed"])["rows"] == 0
    assert (tmp_path / "failed.jsonl").read_text() == ""
    assert export(tableflow_conn, tmp_path / "later.jsonl", day=5)["rows"] == 0
    assert export(tableflow_conn, tmp_path / "ok.jsonl", day=0, states=["succeeded"])["rows"] == 24


def test_a_rerun_replaces_the_object_whole(tableflow_conn: str, emulator: Emulator, tmp_path: Path) -> None:
    target = tmp_path / "day0.jsonl"
    target.write_text('{"stale": true}\n' * 100)
    seed(emulator, days=1)
    first = export(tableflow_conn, target, day=0)
    again = export(tableflow_conn, target, day=0)
    assert first["rows"] == again["rows"] == 24
    assert len(rows(target)) == 24 and "stale" not in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["day0.jsonl"], "no partial object left behind"


def test_a_failure_midway_keeps_the_previous_export(
    tableflow_conn: str, emulator: Emulator, tmp_path: Path, mocker: MockerFixture
) -> None:
    target = tmp_path / "day0.jsonl"
    seed(emulator, days=1)
    export(tableflow_conn, target, day=0)
    before = target.read_text()
    real = FlowRunsClient.iter_runs

    def fails_after_ten(self: FlowRunsClient, query: Any) -> Any:
        for index, run in enumerate(real(self, query)):
            if index == 10:
                raise ConnectionError("the platform went away")
            yield run

    mocker.patch.object(FlowRunsClient, "iter_runs", fails_after_ten)
    with pytest.raises(ConnectionError):
        export(tableflow_conn, target, day=0)
    assert target.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["day0.jsonl"]


def test_streams_page_by_page(tableflow_conn: str, emulator: Emulator, tmp_path: Path, mocker: MockerFixture) -> None:
    seed(emulator, days=1, per_day=2500)
    written = mocker.spy(FlowRun, "to_xcom")
    requests_seen: list[int] = []
    real = FlowRunsClient.call

    def counting(self: FlowRunsClient, call: Any) -> Any:
        requests_seen.append(written.call_count)
        return real(self, call)

    mocker.patch.object(FlowRunsClient, "call", counting)
    assert export(tableflow_conn, tmp_path / "big.jsonl", day=0, page_size=500)["rows"] == 2500
    written_before = [count - requests_seen[0] for count in requests_seen]
    assert written_before == [0, 500, 1000, 1500, 2000], "each page is written before the next is fetched"


def test_other_flows_are_left_out(tableflow_conn: str, emulator: Emulator, tmp_path: Path) -> None:
    seed(emulator, days=1)
    body = {"platform": "tableflow", "flow_id": TABLEFLOW_REVIEW_FLOW, "count": 5, "created_from": DAY.timestamp()}
    emulator.control.post("/seed", json=body)
    assert export(tableflow_conn, tmp_path / "a.jsonl", day=0, flow_id=RECONCILIATION_FLOW)["rows"] == 24
    assert export(tableflow_conn, tmp_path / "b.jsonl", day=0)["rows"] == 29


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({}, "needs a DAG run with a data interval"),
        ({"data_interval_start": DAY, "data_interval_end": DAY}, "needs a DAG run with a data interval"),
    ],
)
def test_refuses_a_run_without_an_interval(tableflow_conn: str, context: Context, message: str) -> None:
    op = FlowRunsExportOperator(task_id="e", flowruns_conn_id=tableflow_conn, destination="file:///tmp/x.jsonl")
    with pytest.raises(FlowRunsConfigError, match=message):
        op.execute(context)


def test_unknown_state_is_refused(tableflow_conn: str, tmp_path: Path) -> None:
    with pytest.raises(FlowRunsConfigError, match="'done' is not a valid RunState"):
        export(tableflow_conn, tmp_path / "x.jsonl", day=0, states=["done"])


@pytest.mark.integration
def test_daily_example_over_three_intervals_and_a_rerun(airflow_home: Path, emulator: Emulator, tmp_path: Path) -> None:
    ids = seed(emulator)
    env = {
        "AIRFLOW_CONN_TABLEFLOW_DEFAULT": json.dumps(
            {"conn_type": "tableflow", "password": API_KEY, "host": emulator.url}
        ),
        "AIRFLOW_VAR_FLOWRUNS_EXPORT_DIR": str(tmp_path),
    }
    for day in range(3):  # a manual run at a logical date exports the day before it
        state, _, xcom = dags_test(airflow_home, "flow_runs_daily_export", f"2026-03-0{day + 2}", **env)
        assert state == "success" and xcom["export.return_value"]["rows"] == 24
    files = {day: tmp_path / "tableflow" / f"2026-03-0{day + 1}.jsonl" for day in range(3)}
    for day, path in files.items():
        assert [row["id"] for row in rows(path)] == ids[day * 24 : (day + 1) * 24][::-1]
    before = files[1].read_text()
    dags_test(airflow_home, "flow_runs_daily_export", "2026-03-03", **env)
    assert files[1].read_text() == before, "re-running a day rewrites the same rows, no duplicates"
