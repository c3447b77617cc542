"""FlowRunSensor in poke and deferrable modes against the emulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_flowruns.exceptions import FlowRunFailedError, FlowRunsApiError, FlowRunsConfigError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms.start import StartRequest
from airflow_flowruns.sensors.flow_run import FlowRunSensor
from support.emulator import Emulator
from support.runs import RECONCILIATION_FLOW, run_trigger


@pytest.fixture
def run_id(tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path]) -> str:
    emulator.scenario(RECONCILIATION_FLOW, processing_seconds=60)
    request = StartRequest(flow_id=RECONCILIATION_FLOW, files={"purchase_order": pdfs["po"], "invoice": pdfs["inv"]})
    return FlowRunsHook(tableflow_conn).start_run(request).id


def sensor(conn_id: str, run_id: str, **kwargs: Any) -> FlowRunSensor:
    return FlowRunSensor(task_id="wait", flowruns_conn_id=conn_id, run_id=run_id, poke_interval=0.05, **kwargs)


def test_poke_is_false_while_running_then_returns_the_run(tableflow_conn: str, emulator: Emulator, run_id: str) -> None:
    task = sensor(tableflow_conn, run_id)
    assert task.poke({}).is_done is False
    emulator.set_status(run_id, "completed")
    done = task.poke({})
    assert done.is_done and done.xcom_value is not None
    assert (done.xcom_value["state"], done.xcom_value["id"]) == ("succeeded", run_id)


def test_poke_fails_on_a_failed_run(tableflow_conn: str, emulator: Emulator, run_id: str) -> None:
    emulator.set_status(run_id, "failed", error="Unreadable scan")
    with pytest.raises(FlowRunFailedError, match="Unreadable scan"):
        sensor(tableflow_conn, run_id).poke({})


@pytest.mark.parametrize(("on_review", "outcome"), [("succeed", "needs_review"), ("wait", None), ("fail", "error")])
def test_poke_applies_the_review_policy(
    tableflow_conn: str, emulator: Emulator, run_id: str, on_review: str, outcome: str | None
) -> None:
    emulator.set_status(run_id, "review")
    task = sensor(tableflow_conn, run_id, on_review=on_review)
    if outcome == "error":
        with pytest.raises(FlowRunFailedError, match="human review"):
            task.poke({})
    elif outcome is None:
        assert task.poke({}).is_done is False
    else:
        done = task.poke({})
        assert done.xcom_value is not None and done.xcom_value["state"] == outcome


def test_deferrable_mode_defers_and_completes(tableflow_conn: str, emulator: Emulator, run_id: str) -> None:
    task = sensor(tableflow_conn, run_id, deferrable=True, timeout=300)
    with pytest.raises(TaskDeferred) as deferred:
        task.execute({})
    emulator.set_status(run_id, "completed")
    result = task.execute_complete({}, run_trigger(deferred.value.trigger))
    assert result["state"] == "succeeded"


def test_deferrable_mode_on_a_finished_run_does_not_defer(tableflow_conn: str, emulator: Emulator, run_id: str) -> None:
    emulator.set_status(run_id, "completed")
    assert sensor(tableflow_conn, run_id, deferrable=True).execute({})["state"] == "succeeded"


def test_unknown_run_fails_before_deferring(tableflow_conn: str) -> None:
    with pytest.raises(FlowRunsApiError, match="404"):
        sensor(tableflow_conn, "nope000000000000", deferrable=True).execute({})


def test_empty_run_id_is_refused(tableflow_conn: str) -> None:
    with pytest.raises(FlowRunsConfigError, match="run_id is empty"):
        sensor(tableflow_conn, "  ", deferrable=True).execute({})
