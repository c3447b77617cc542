"""What ``airflow dags test`` of a deferrable DAG prints, and the event loop it runs a trigger in: the wait's lines,
the task's real error, and neither an unclosed aiohttp session nor a missing XCom reported after them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import pytest

from airflow_flowruns.client import AsyncFlowRunsClient
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms.start import StartRequest
from airflow_flowruns.triggers.flow_run import FlowRunTrigger
from support.airflow import airflow_env, dags_test_command, last_dag_run
from support.emulator import API_KEY, Emulator
from support.runs import RECONCILIATION_FLOW, collect_events

DAG_ID = "extend_invoice_extraction"
NOISE = ("Unclosed client session", "Unclosed connector", "XCom not found")
"""What Airflow, aiohttp and asyncio print after a task's own lines when a provider leaves a session open or
its extra link reads an XCom that was never pushed."""


def trigger_for(conn_id: str, pdfs: dict[str, Path]) -> FlowRunTrigger:
    request = StartRequest(flow_id=RECONCILIATION_FLOW, files={"purchase_order": pdfs["po"], "invoice": pdfs["inv"]})
    return FlowRunTrigger(
        conn_id=conn_id,
        platform="tableflow",
        flow_id=RECONCILIATION_FLOW,
        run_id=FlowRunsHook(conn_id).start_run(request).id,
        deadline=time.time() + 60,
        poll_interval=0.05,
    )


def session_closed(client: AsyncFlowRunsClient) -> bool:
    session = client._session  # the aiohttp session whose garbage collection reports it unclosed
    return session is not None and session.closed


def test_a_trigger_run_inline_closes_its_shared_client_when_its_event_loop_ends(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path]
) -> None:
    """``airflow dags test`` runs a deferred task's trigger in an event loop of its own, up to its first event
    (``InProcessTestSupervisor.run_trigger_in_process``), and ends the loop."""
    emulator.scenario(RECONCILIATION_FLOW, processing_seconds=0.1)
    trigger = trigger_for(tableflow_conn, pdfs)

    async def first_event_as_dags_test_runs_it() -> tuple[str, AsyncFlowRunsClient]:
        event = await anext(trigger.run(), None)
        assert event is not None
        return event.payload["outcome"], await FlowRunsHook.get_async_client(tableflow_conn)

    outcome, client = asyncio.run(first_event_as_dags_test_runs_it())
    assert outcome == "settled"
    assert session_closed(client), "the loop ended with its client's aiohttp session open"


def test_triggers_share_the_loops_client_until_the_loop_ends(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path]
) -> None:
    """A triggerer's loop outlives its triggers: one ending leaves the client open for the next."""
    emulator.scenario(RECONCILIATION_FLOW, processing_seconds=0.1)
    triggers = [trigger_for(tableflow_conn, pdfs) for _ in range(2)]

    async def one_after_the_other() -> list[AsyncFlowRunsClient]:
        clients = []
        for trigger in triggers:
            assert [event.payload["outcome"] for event in await collect_events(trigger)] == ["settled"]
            client = await FlowRunsHook.get_async_client(tableflow_conn)
            assert not session_closed(client), "a trigger that ended closed the client the loop's others share"
            clients.append(client)
        return clients

    first, second = asyncio.run(one_after_the_other())
    assert first is second and session_closed(first)


@pytest.mark.integration
@pytest.mark.parametrize(("password", "state"), [(API_KEY, "success"), ("not-the-key", "failed")])
def test_a_deferrable_dag_test_ends_without_an_unclosed_session_or_a_missing_xcom(
    airflow_home: Path, emulator: Emulator, pdf: Path, password: str, state: str
) -> None:
    """A task that deferred and succeeded, and one that failed before a run existed (so pushed no run URL)."""
    conn = json.dumps({"conn_type": "extend", "password": password, "host": emulator.url})
    env = airflow_env(airflow_home, AIRFLOW_CONN_EXTEND_DEFAULT=conn, AIRFLOW_VAR_FLOWRUNS_DATA_DIR=str(pdf.parent))
    done = subprocess.run(dags_test_command(DAG_ID), env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr

    _, tasks, xcom = last_dag_run(airflow_home, DAG_ID)
    assert tasks["extract"] == state, output[-3000:]
    assert [noise for noise in NOISE if noise in output] == [], output[-3000:]
    if state == "success":
        url = xcom["extract.return_value"]["url"]
        assert "from the triggerer: a check every 1.0 s until" in output
        assert "ended succeeded (PROCESSED) after " in output and f": {url}" in output
    else:
        assert "FlowRunsAuthError" in output and "flow_run_url" not in json.dumps(xcom)
