"""The asset watcher where Airflow gives it no state store: Airflow 3.1 and 3.2 (``make compat`` runs this
module there), or a triggerer that injected none. The triggerer then runs ``FlowRunEventTrigger.run()``,
the position lives in memory, and every start of the watcher begins at ``start_from``."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

import pytest
from airflow import __version__ as airflow_version
from airflow.executors import workloads
from airflow.jobs.triggerer_job_runner import TriggerRunner
from airflow.models.trigger import Trigger
from airflow.sdk import Asset, AssetWatcher
from airflow.sdk.module_loading import import_string
from airflow.triggers.base import BaseEventTrigger

from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.triggers.watcher import FlowRunEventTrigger
from airflow_flowruns.version_compat import AIRFLOW_V_3_3_PLUS, missing_feature
from support.emulator import API_KEY, Emulator
from support.watching import FAST_POLL, FLOWS, connect, manual_runs, payloads, started_watching, until, until_finished


def test_kwargs_are_plain_deterministic_and_make_an_asset_watcher(tableflow_conn: str) -> None:
    trigger = FlowRunEventTrigger(conn_id=tableflow_conn, flow_id="f", states=["failed", "succeeded"])
    classpath, kwargs = trigger.serialize()
    assert import_string(classpath) is FlowRunEventTrigger
    assert kwargs["start_from"] == "now" and kwargs["states"] == ["failed", "succeeded"]
    assert all(isinstance(v, str | int | float | list | type(None)) for v in kwargs.values())
    again = FlowRunEventTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert BaseEventTrigger.hash(classpath, kwargs) == BaseEventTrigger.hash(*again.serialize())
    assert AssetWatcher(name="w", trigger=again) in Asset("tableflow://f", watchers=[AssetWatcher("w", again)]).watchers
    assert API_KEY not in repr(kwargs)


def test_without_a_state_store_the_watcher_is_no_shared_stream(tableflow_conn: str) -> None:
    """Airflow 3.3's triggerer runs a trigger as a shared stream only when it names one; without a state store
    this watcher names none, so every Airflow runs it through ``run()``."""
    trigger = FlowRunEventTrigger(**FlowRunEventTrigger(conn_id=tableflow_conn).serialize()[1])
    assert trigger.shared_stream_key() is None


def test_this_airflows_trigger_runner_builds_the_watcher_from_its_stored_kwargs_and_runs_it(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As this Airflow's triggerer does: the kwargs come encrypted from the database, its trigger runner builds
    the watcher from them, sees a watcher, and runs it; with no watched assets (no state store) through ``run()``."""
    conn_id = connect(monkeypatch, emulator, "tableflow")
    flow_id = FLOWS["tableflow"][0]
    emulator.scenario(flow_id, processing_seconds=0.1)
    since = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()  # the runs below finish after it, however slow
    watcher = FlowRunEventTrigger(conn_id=conn_id, flow_id=flow_id, start_from=since, poll_interval=FAST_POLL)
    classpath, kwargs = watcher.serialize()
    stored = Trigger.encrypt_kwargs(kwargs)  # as the trigger row holds them
    workload = workloads.RunTrigger(id=7, ti=None, classpath=classpath, encrypted_kwargs=stored, timeout_after=None)

    async def triggerer() -> tuple[list[str], list[str]]:
        runner = TriggerRunner()
        runner.to_create.append(workload)
        await runner.create_triggers()
        assert 7 in runner.triggers and runner.triggers[7]["is_watcher"], list(runner.failed_triggers)
        started = await asyncio.to_thread(manual_runs, emulator, "tableflow", flow_id, 3)
        await until(lambda: len(runner.events) >= 3)
        runner.triggers[7]["task"].cancel()
        await asyncio.gather(runner.triggers[7]["task"], return_exceptions=True)
        await FlowRunsHook.close_async_clients()
        return started, [entry[1].payload["run_id"] for entry in runner.events]  # (trigger id, event, ...)

    started, announced = asyncio.run(triggerer())
    assert sorted(announced) == sorted(started)


def test_without_a_state_store_a_restart_begins_at_start_from(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With start_from "now" a restart forgets what finished while no watcher ran; with a timestamp it announces
    it again, with the same keys. Before Airflow 3.3 the log says why, once per process."""
    missing_feature.cache_clear()
    caplog.set_level(logging.WARNING, logger="airflow_flowruns.version_compat")
    conn_id = connect(monkeypatch, emulator, "tableflow")
    flow_id = FLOWS["tableflow"][0]
    emulator.scenario(flow_id, processing_seconds=0.1)
    began = datetime.now(UTC) - timedelta(seconds=1)
    first = asyncio.run(
        started_watching(
            FlowRunEventTrigger(conn_id=conn_id, poll_interval=FAST_POLL),
            lambda: manual_runs(emulator, "tableflow", flow_id),
            1,
        )
    )
    while_down = manual_runs(emulator, "tableflow", flow_id)
    # The run finishes while no watcher runs, in a second before the next watcher's start (starts are whole seconds).
    ended = asyncio.run(until_finished(emulator, while_down[0]))
    asyncio.run(until(lambda: time.time() >= int(ended) + 1))

    fresh = FlowRunEventTrigger(**FlowRunEventTrigger(conn_id=conn_id, poll_interval=FAST_POLL).serialize()[1])
    later: list[str] = []
    after = asyncio.run(started_watching(fresh, lambda: later.extend(manual_runs(emulator, "tableflow", flow_id)), 1))
    assert [event["run_id"] for event in after] == later  # the run finished while down is not announced

    replaying = FlowRunEventTrigger(conn_id=conn_id, start_from=began.isoformat(), poll_interval=FAST_POLL)
    replayed = asyncio.run(payloads(replaying, 3))
    assert {event["run_id"] for event in replayed} == {first[0]["run_id"], *while_down, *later}
    assert {event["dedup_key"] for event in replayed} >= {first[0]["dedup_key"], after[0]["dedup_key"]}

    said = [r.getMessage() for r in caplog.records if "state store" in r.getMessage()]
    assert said == (
        []
        if AIRFLOW_V_3_3_PLUS
        else [
            "Keeping an asset watcher's position in the asset's state store (each start begins at start_from) "
            f"needs Airflow 3.3 or later; this is Airflow {airflow_version}, so it is off."
        ]
    )
