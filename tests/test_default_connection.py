"""The connection used when none is named: ``flowruns_default``, else the one ``<platform>_default`` that exists,
from real connections in ``AIRFLOW_CONN_*`` variables, in the hook, an operator, the asset watcher and the CLI."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import Context
from airflow.sdk.exceptions import TaskDeferred

from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.operators.flow_run import FlowRunOperator
from airflow_flowruns.platforms import registered
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_SMALL_FILE_FLOW
from airflow_flowruns.triggers.flow_run import FlowRunTrigger
from airflow_flowruns.triggers.watcher import FlowRunEventTrigger
from support.emulator import Emulator, set_connection
from support.runs import run_trigger
from support.watching import FAST_POLL, logged, manual_runs, started_watching, take, until
from test_cli import run_here

CANDIDATES = ("flowruns_default", *(facts.default_conn_id for facts in registered()))


@pytest.fixture(autouse=True)
def no_default_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test with none of the default connections defined, whatever the environment holds."""
    for conn_id in CANDIDATES:
        monkeypatch.delenv(f"AIRFLOW_CONN_{conn_id.upper()}", raising=False)


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every connection id the hooks look up, in order."""
    looked_up: list[str] = []
    real = FlowRunsHook.get_connection

    def counting(conn_id: str) -> Any:
        looked_up.append(conn_id)
        return real(conn_id)

    monkeypatch.setattr(FlowRunsHook, "get_connection", staticmethod(counting))
    return looked_up


# --- the hook ---------------------------------------------------------------------------------------------------


def test_no_default_connection_names_every_id_looked_for_and_the_fix() -> None:
    hook = FlowRunsHook()
    with pytest.raises(FlowRunsConfigError) as raised:
        _ = hook.client
    message = str(raised.value)
    assert all(repr(conn_id) in message for conn_id in CANDIDATES), message
    assert "flowruns_conn_id=" in message and "AIRFLOW_CONN_TABLEFLOW_DEFAULT=" in message


def test_the_one_platform_default_is_used(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "extend_default", "extend", emulator.url)
    hook = FlowRunsHook()
    assert hook.flowruns_conn_id == "extend_default"
    assert hook.platform.name == "extend"


def test_flowruns_default_comes_first_and_costs_one_lookup(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, lookups: list[str]
) -> None:
    set_connection(monkeypatch, "flowruns_default", "noxus", emulator.url)
    set_connection(monkeypatch, "tableflow_default", "tableflow", emulator.url)
    set_connection(monkeypatch, "extend_default", "extend", emulator.url)
    hook = FlowRunsHook()
    assert lookups == []  # nothing is looked up before the connection is used
    assert (hook.flowruns_conn_id, hook.platform.name) == ("flowruns_default", "noxus")
    assert lookups == ["flowruns_default"]  # once, and the client reuses the connection found
    assert asyncio.run(FlowRunEventTrigger().watched_conn_id()) == "flowruns_default"  # the triggerer's lookup too


def test_two_platform_defaults_are_refused_by_name(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "tableflow_default", "tableflow", emulator.url)
    set_connection(monkeypatch, "stackai_default", "stackai", emulator.url)
    with pytest.raises(FlowRunsConfigError, match="several platforms") as raised:
        _ = FlowRunsHook().flowruns_conn_id
    message = str(raised.value)
    assert "'tableflow_default'" in message and "'stackai_default'" in message and "flowruns_conn_id=" in message


def test_a_named_connection_is_the_only_lookup(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, lookups: list[str]
) -> None:
    set_connection(monkeypatch, "tableflow_default", "tableflow", emulator.url)
    set_connection(monkeypatch, "mine", "extend", emulator.url)
    hook = FlowRunsHook("mine")
    assert hook.flowruns_conn_id == "mine" and lookups == []
    assert hook.platform.name == "extend" and lookups == ["mine"]


# --- an operator --------------------------------------------------------------------------------------------------


def test_an_operator_without_a_connection_id_runs_on_the_default_and_hands_it_to_the_trigger(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, pdf: Path, context: Context
) -> None:
    set_connection(monkeypatch, "tableflow_default", "tableflow", emulator.url)
    emulator.scenario(TABLEFLOW_SMALL_FILE_FLOW, processing_seconds=0.2)
    op = FlowRunOperator(
        task_id="default_conn",
        flow_id=TABLEFLOW_SMALL_FILE_FLOW,
        files={"document": pdf},
        deferrable=True,
        poll_interval=0.05,
    )
    assert op.flowruns_conn_id is None
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    trigger = deferred.value.trigger
    assert isinstance(trigger, FlowRunTrigger)
    _, kwargs = trigger.serialize()
    assert kwargs["conn_id"] == "tableflow_default"  # resolved in the worker: the triggerer never resolves
    result = op.execute_complete(context, run_trigger(FlowRunTrigger(**kwargs)))
    assert result["state"] == "succeeded" and result["id"] == emulator.runs()[0]["id"]


# --- the asset watcher ----------------------------------------------------------------------------------------


def test_the_watcher_takes_either_name_and_serializes_it_as_conn_id() -> None:
    by_trigger_name = FlowRunEventTrigger(conn_id="tableflow_watch")
    by_operator_name = FlowRunEventTrigger(flowruns_conn_id="tableflow_watch")
    classpath, kwargs = by_operator_name.serialize()
    assert (classpath, kwargs) == by_trigger_name.serialize()
    assert kwargs["conn_id"] == "tableflow_watch" and "flowruns_conn_id" not in kwargs
    assert FlowRunEventTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert FlowRunEventTrigger(conn_id="same", flowruns_conn_id="same").conn_id == "same"
    with pytest.raises(TypeError, match="conn_id='a' and flowruns_conn_id='b'.*pass one of them"):
        FlowRunEventTrigger(conn_id="a", flowruns_conn_id="b")


def test_a_watcher_serialized_before_loads_as_it_was() -> None:
    kwargs: dict[str, Any] = {
        "conn_id": "tableflow_watch",
        "flow_id": None,
        "states": ["cancelled", "failed", "succeeded"],
        "start_from": "now",
        "poll_interval": 30.0,
        "max_events_per_poll": 100,
        "lookback_hours": 24.0,
    }
    assert FlowRunEventTrigger(**kwargs).serialize()[1] == kwargs


def test_a_watcher_without_a_connection_watches_the_default_one_found_in_the_triggerer(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    set_connection(monkeypatch, "tableflow_default", "tableflow", emulator.url)
    emulator.scenario(TABLEFLOW_SMALL_FILE_FLOW, processing_seconds=0.2)
    trigger = FlowRunEventTrigger(flow_id=TABLEFLOW_SMALL_FILE_FLOW, poll_interval=FAST_POLL)
    kwargs = trigger.serialize()[1]
    assert kwargs["conn_id"] is None  # resolved where the watcher runs, not where the DAG is parsed
    started: list[str] = []
    events = asyncio.run(
        started_watching(
            trigger, lambda: started.extend(manual_runs(emulator, "tableflow", TABLEFLOW_SMALL_FILE_FLOW)), 1
        )
    )
    assert [event["run_id"] for event in events] == started
    assert trigger.serialize()[1] == kwargs  # the trigger Airflow stores stays the same one
    assert "watching the runs of the default connection 'tableflow_default'" in capsys.readouterr().out


def test_a_watcher_with_no_default_yet_logs_why_and_goes_on(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    emulator.scenario(TABLEFLOW_SMALL_FILE_FLOW, processing_seconds=0.2)
    trigger = FlowRunEventTrigger(flow_id=TABLEFLOW_SMALL_FILE_FLOW, poll_interval=0.05)

    async def later() -> list[dict[str, Any]]:
        events = asyncio.ensure_future(take(trigger.run(), 1))
        await until(logged(capsys, "no default connection exists", times=2))
        assert not events.done()
        set_connection(monkeypatch, "tableflow_default", "tableflow", emulator.url)
        await asyncio.sleep(0.3)  # a poll on the connection now found sets the watcher's start
        manual_runs(emulator, "tableflow", TABLEFLOW_SMALL_FILE_FLOW)
        found = await events
        await FlowRunsHook.close_async_clients()
        return [event.payload for event in found]

    assert len(asyncio.run(later())) == 1


# --- the CLI --------------------------------------------------------------------------------------------------------


def test_the_cli_uses_the_default_connection(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run_here(capsys, "runs", "list")
    assert status == 2 and "AIRFLOW_CONN_TABLEFLOW_DEFAULT=" in err

    set_connection(monkeypatch, "tableflow_default", "tableflow", emulator.url)
    (run_id,) = manual_runs(emulator, "tableflow", TABLEFLOW_SMALL_FILE_FLOW)
    status, out, err = run_here(capsys, "runs", "list", "-o", "json")
    assert status == 0, err
    assert run_id in out
    status, out, err = run_here(capsys, "doctor", "-o", "json")
    assert "'tableflow_default': TableFlow at" in out, out + err
