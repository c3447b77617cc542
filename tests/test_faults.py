"""The emulator's fault mode, and the provider riding through it."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytest_mock import MockerFixture

from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.operators.flow_run import FlowRunOperator
from support.emulator import API_KEY, Emulator, set_connection
from support.runs import RECONCILIATION_FLOW


def fault_mode(emulator: Emulator, **mode: Any) -> None:
    emulator.control.put("/fault-mode", json=mode).raise_for_status()


def test_fault_mode_answers_a_share_of_requests_and_counts_them(emulator: Emulator) -> None:
    fault_mode(emulator, rate=0.5, kinds=["500", "429_retry_after", "html"], seed=7)
    with httpx.Client(base_url=emulator.url, headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        statuses = Counter(client.get("/v2/flows").status_code for _ in range(60))
    stats = emulator.control.get("/stats").json()
    assert 10 < sum(stats["faults"].values()) < 50
    assert statuses[200] == 60 - sum(stats["faults"].values())
    assert statuses[429] == stats["faults"].get("429_retry_after", 0)
    assert statuses[502] == stats["faults"].get("html", 0)
    assert sum(r["fault"] is not None for r in emulator.requests()) == sum(stats["faults"].values())


def test_a_dropped_connection_cuts_the_body_short(emulator: Emulator) -> None:
    fault_mode(emulator, rate=1.0, kinds=["drop"])
    with httpx.Client(base_url=emulator.url, headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        try:
            client.get("/v2/flows")
        except httpx.TransportError:
            pass
        else:
            raise AssertionError("the connection should have been dropped mid-response")


def test_a_stall_outlasts_the_client_timeout_and_is_retried(
    tableflow_conn: str,
    emulator: Emulator,
    pdfs: dict[str, Path],
    mocker: MockerFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_connection(monkeypatch, "tf_stall", "tableflow", emulator.url, timeout=0.3)
    emulator.fault("/v2/flows", 0, method="GET", kind="stall")
    emulator.control.put("/fault-mode", json={"rate": 0, "stall_seconds": 1.0}).raise_for_status()
    assert FlowRunsHook("tf_stall").test_connection()[0]
    deadline = time.monotonic() + 10  # the stalled request is logged when its late answer goes out
    while len(logged := [r["fault"] for r in emulator.requests() if r["path"] == "/v2/flows"]) < 2:
        assert time.monotonic() < deadline, logged
        time.sleep(0.05)
    assert sorted(logged, key=str) == [None, "stall"]


def test_a_task_rides_through_a_faulty_platform(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path], mocker: MockerFixture
) -> None:
    emulator.scenario(RECONCILIATION_FLOW, processing_seconds=0.3)
    fault_mode(emulator, rate=0.3, kinds=["429", "500", "502", "503", "html", "drop", "malformed"], seed=3)
    results = []
    for task_id in ("a", "b", "c", "d", "e"):
        ti = mocker.MagicMock(dag_id="d", task_id=task_id, run_id="r", map_index=-1, try_number=1)
        op = FlowRunOperator(
            task_id=task_id,
            flowruns_conn_id=tableflow_conn,
            flow_id=RECONCILIATION_FLOW,
            files={"purchase_order": pdfs["po"], "invoice": pdfs["inv"]},
            poll_interval=0.05,
            deferrable=False,
        )
        try:
            results.append(op.execute({"ti": ti})["state"])
        except Exception as exc:  # a start refused before acceptance: Airflow would retry the task
            results.append(type(exc).__name__)
    assert sum(emulator.control.get("/stats").json()["faults"].values()) > 0
    runs = Counter(run["metadata"]["airflow_task_key"] for run in emulator.runs())
    assert all(count == 1 for count in runs.values()), "never two runs for one task instance"
    assert results.count("succeeded") == len(runs)
