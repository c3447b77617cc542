"""FlowRunEventTrigger in an event loop against the emulator: runs started outside Airflow, states,
restarts (with Airflow's own ack-mode shared stream and an in-memory state store), errors and 429s.
What a restart does without a state store (Airflow before 3.3) is in ``test_watcher_without_store.py``."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.triggers.shared_stream import SharedStreamManager

from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms.start import StartRequest
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_REVIEW_FLOW
from airflow_flowruns.triggers.watch_position import CLOCK_SKEW, Position
from airflow_flowruns.triggers.watcher import FlowRunEventTrigger
from support.emulator import API_KEY, Emulator
from support.watching import (
    BOUND,
    FAST_POLL,
    FLOWS,
    connect,
    logged,
    manual_runs,
    started_watching,
    take,
    until,
    until_finished,
)

LISTING = {"tableflow": "/flows/runs", "extend": "/workflow_runs", "noxus": "/v1/", "stackai": "/analytics/"}
EXAMPLES = Path(__file__).resolve().parent.parent / "example_dags"


@pytest.mark.parametrize("platform", sorted(FLOWS))
def test_runs_started_outside_airflow_are_announced_once_each(
    platform: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = connect(monkeypatch, emulator, platform)
    flow_id = FLOWS[platform][0]
    emulator.scenario(flow_id, platform, processing_seconds=0.3)
    long_done = time.time() - 3600
    emulator.control.post(
        "/seed", json={"platform": platform, "flow_id": flow_id, "count": 3, "created_from": long_done}
    ).raise_for_status()
    trigger = FlowRunEventTrigger(conn_id=conn_id, flow_id=flow_id, poll_interval=FAST_POLL)
    started: list[str] = []
    events = asyncio.run(
        started_watching(trigger, lambda: started.extend(manual_runs(emulator, platform, flow_id, 3)), 3)
    )

    assert sorted(event["run_id"] for event in events) == sorted(started)  # not the runs done before it started
    for event in events:
        assert event["platform"] == platform and event["flow_id"] == flow_id
        assert event["state"] == "succeeded" and event["task_key"] is None
        assert event["dedup_key"] == f"{platform}:{event['run_id']}:succeeded"
        assert event["ended_at"] and event["created_at"] and event["status"]
        assert set(event) == {
            "platform", "flow_id", "run_id", "state", "status", "url", "created_at", "ended_at", "task_key", "dedup_key"
        }  # fmt: skip
    assert API_KEY not in repr(events)


def test_a_person_started_tableflow_run_says_manual(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    conn_id = connect(monkeypatch, emulator, "tableflow")
    [run_id] = manual_runs(emulator, "tableflow", FLOWS["tableflow"][0])
    assert (
        FlowRunsHook(conn_id).client.call(
            FlowRunsHook(conn_id).platform.get_run_call(None, run_id)  # type: ignore[arg-type]
        )["trigger_method"]
        == "manual"
    )


@pytest.mark.parametrize("platform", ["tableflow", "extend"])
def test_runs_a_task_started_carry_its_task_key(
    platform: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch, pdf: Path
) -> None:
    conn_id = connect(monkeypatch, emulator, platform)
    flow_id = FLOWS[platform][0]
    emulator.scenario(flow_id, platform, processing_seconds=0.3)
    key = "af-" + "0123456789abcdef01234567"
    files = {"document" if platform == "tableflow" else "file": pdf}
    request = StartRequest(flow_id=flow_id, files=files, task_key=key)
    trigger = FlowRunEventTrigger(conn_id=conn_id, flow_id=flow_id, poll_interval=FAST_POLL)
    [event] = asyncio.run(started_watching(trigger, lambda: FlowRunsHook(conn_id).start_run(request), 1))
    assert event["task_key"] == key


def test_only_the_watched_states_are_announced(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    conn_id = connect(monkeypatch, emulator, "tableflow")
    good, failing = FLOWS["tableflow"]
    review = TABLEFLOW_REVIEW_FLOW
    emulator.scenario(good, processing_seconds=0.2)
    emulator.scenario(failing, processing_seconds=0.2, outcome="failed")
    emulator.scenario(review, processing_seconds=0.2, review=True)
    trigger = FlowRunEventTrigger(conn_id=conn_id, states=["failed", "needs_review"], poll_interval=FAST_POLL)

    def start() -> None:
        for flow_id in (good, failing, review):
            manual_runs(emulator, "tableflow", flow_id, 2)

    events = asyncio.run(started_watching(trigger, start, 4))
    assert sorted((event["flow_id"], event["state"]) for event in events) == sorted(
        [(failing, "failed")] * 2 + [(review, "needs_review")] * 2
    )


def test_a_backlog_is_announced_oldest_first_a_few_per_poll(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = connect(monkeypatch, emulator, "tableflow")
    flow_id = FLOWS["tableflow"][0]
    start = datetime.now(UTC) - timedelta(minutes=30)
    emulator.control.post(
        "/seed", json={"platform": "tableflow", "flow_id": flow_id, "count": 7, "created_from": start.timestamp() + 60,
                       "created_to": start.timestamp() + 600}
    ).raise_for_status()  # fmt: skip
    trigger = FlowRunEventTrigger(conn_id=conn_id, start_from=start.isoformat(), max_events_per_poll=3)

    async def polls() -> list[list[dict[str, Any]]]:
        position, found = Position.starting(start), []
        for _ in range(4):
            announced = (await trigger.poll(position)).announced
            found.append([payload for payload, _ in announced])
            position = announced[-1][1] if announced else position
        await FlowRunsHook.close_async_clients()
        return found

    found = asyncio.run(polls())
    assert [len(poll) for poll in found] == [3, 3, 1, 0]
    ended = [event["ended_at"] for poll in found for event in poll]
    assert ended == sorted(ended)
    assert len({event["run_id"] for poll in found for event in poll}) == 7


@pytest.mark.parametrize("platform", ["tableflow", "extend"])
def test_a_poll_reads_only_the_pages_that_can_hold_a_change(
    platform: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Extend's listing by ``updatedAt`` and TableFlow's by creation stop at the first run too old to matter."""
    conn_id = connect(monkeypatch, emulator, platform)
    flow_id = FLOWS[platform][0]
    days_ago = time.time() - 3 * 86400
    emulator.control.post(
        "/seed", json={"platform": platform, "flow_id": flow_id, "count": 500, "created_from": days_ago}
    ).raise_for_status()
    emulator.scenario(flow_id, platform, processing_seconds=0.1)
    start = datetime.now(UTC).replace(microsecond=0)  # TableFlow times runs to the second
    trigger = FlowRunEventTrigger(conn_id=conn_id, flow_id=flow_id, start_from=start.isoformat())
    [run_id] = manual_runs(emulator, platform, flow_id)
    asyncio.run(until_finished(emulator, run_id))
    emulator.clear_requests()

    async def one_poll() -> list[dict[str, Any]]:
        found = await trigger.poll(Position.starting(datetime.fromisoformat(trigger.start_from)))
        await FlowRunsHook.close_async_clients()
        return [payload for payload, _ in found.announced]

    assert [event["run_id"] for event in asyncio.run(one_poll())] == [run_id]
    listings = [r for r in emulator.requests() if r["path"].endswith(LISTING[platform]) and r["method"] == "GET"]
    assert len(listings) == 1  # one page of 100, not the 5 pages of the 501 runs


@pytest.mark.parametrize("status", [500, 429])
def test_errors_and_rate_limits_do_not_end_the_watcher(
    status: int, emulator: Emulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conn_id = connect(monkeypatch, emulator, "extend")
    flow_id = FLOWS["extend"][0]
    emulator.scenario(flow_id, "extend", processing_seconds=0.2)
    body = '{"code": "RATE_LIMIT_EXCEEDED", "message": "slow down", "retryable": true}' if status == 429 else ""
    # More failures in a row than the client retries: whole polls fail, and the watcher polls again.
    emulator.fault("/workflow_runs", status, body, method="GET", count=8, headers={"Retry-After": "0"})
    trigger = FlowRunEventTrigger(conn_id=conn_id, flow_id=flow_id, poll_interval=0.05)
    started: list[str] = []
    events = asyncio.run(started_watching(trigger, lambda: started.extend(manual_runs(emulator, "extend", flow_id)), 1))
    assert [event["run_id"] for event in events] == started
    logged = capsys.readouterr()
    assert f"HTTP {status}" in logged.out and "failed for now" in logged.out  # polls failed, the watcher went on
    assert API_KEY not in logged.out + logged.err


def test_a_missing_connection_is_logged_and_the_watcher_goes_on(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    trigger = FlowRunEventTrigger(conn_id="tableflow_later", poll_interval=0.05)

    async def later() -> list[dict[str, Any]]:
        events = asyncio.ensure_future(take(trigger.run(), 1))
        await until(logged(capsys, "connection 'tableflow_later' failed for now", times=2))
        assert not events.done()  # still polling, not ended
        connect(monkeypatch, emulator, "tableflow")
        monkeypatch.setenv("AIRFLOW_CONN_TABLEFLOW_LATER", os.environ["AIRFLOW_CONN_TABLEFLOW_WATCH"])
        manual_runs(emulator, "tableflow", FLOWS["tableflow"][0])
        found = await events
        await FlowRunsHook.close_async_clients()
        return [event.payload for event in found]

    emulator.scenario(FLOWS["tableflow"][0], processing_seconds=0.2)
    assert len(asyncio.run(later())) == 1


# --- kwargs and states refused ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"states": ["done"]}, "'done' is not a valid RunState"),
        ({"states": []}, "states is empty"),
        ({"start_from": "yesterday"}, "start_from must be 'now' or an ISO 8601 timestamp"),
        ({"poll_interval": 0}, "poll_interval must be a positive number"),
        ({"poll_interval": 0.001}, r"at least 0.01 s.*\[flowruns\] min_poll_interval"),
        ({"max_events_per_poll": 0}, "must be positive"),
    ],
)
def test_bad_kwargs_are_refused_up_front(kwargs: dict[str, Any], names: str) -> None:
    with pytest.raises(FlowRunsConfigError, match=names):
        FlowRunEventTrigger(conn_id="c", **kwargs)


@pytest.mark.parametrize("state", ["needs_review", "running"])
def test_states_a_platform_does_not_timestamp_are_refused_once_connected(
    state: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Noxus runs carry a creation and an end time only: when a run began running or entered review is unknown,
    so such a watcher could never announce a run. It is told so, with the states it can watch instead."""
    conn_id = connect(monkeypatch, emulator, "noxus")
    trigger = FlowRunEventTrigger(conn_id=conn_id, states=[state], poll_interval=0.05)

    async def polls() -> None:
        watching = asyncio.ensure_future(take(trigger.run(), 1))
        refused = (
            f"Noxus does not say when a run entered {state}, so a watcher cannot tell when it happened: "
            "watch cancelled, failed, queued, succeeded instead."
        )
        await until(logged(capsys, refused, times=2))
        assert not watching.done()  # refused, logged, and polling on: the watcher did not end
        watching.cancel()
        await FlowRunsHook.close_async_clients()

    asyncio.run(polls())


# --- restarts with a state store, through Airflow's ack-mode shared stream ------------------------------


class MemoryAccessor:
    """One asset's state store, in memory, with the accessor's async interface."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.writes = 0

    async def aget(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    async def aset(self, key: str, value: Any) -> None:
        self.values[key] = value
        self.writes += 1


class Triggerer:
    """Runs one watcher as Airflow 3.3's triggerer does in ack mode: the shared stream, its filter, and a
    persist confirmation per event, which the test gives only for the events it says were stored."""

    def __init__(self, trigger: FlowRunEventTrigger, store: MemoryAccessor) -> None:
        self.trigger = trigger
        trigger.asset_state_store = store  # type: ignore[assignment]
        self.manager = SharedStreamManager(ack_timeout=60)
        key = trigger.shared_stream_key()
        assert key is not None
        self.key = key
        self.events = trigger.filter_shared_stream(self.manager.subscribe(trigger_id=1, trigger=trigger, key=key))
        self.unconfirmed: list[int] = []

    async def next_events(self, count: int, *, stored: bool) -> list[dict[str, Any]]:
        """The next ``count`` events; ``stored``: the supervisor confirms each one stored in the database."""
        found = []
        for _ in range(count):
            event = await asyncio.wait_for(anext(self.events), BOUND)
            seq = self.manager.bind_pending_event(trigger_id=1, key=self.key)
            assert seq is not None, "the watcher did not run in ack mode"
            if stored:
                self.manager.confirm_persisted([seq])
            else:
                self.unconfirmed.append(seq)
            found.append(event.payload)
        return found

    async def kill(self) -> None:
        await self.manager.stop_all()
        await FlowRunsHook.close_async_clients()


def test_a_restarted_watcher_continues_from_the_stored_position_without_losing_a_run(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = connect(monkeypatch, emulator, "tableflow")
    flow_id = FLOWS["tableflow"][0]
    emulator.scenario(flow_id, processing_seconds=0.1)
    store = MemoryAccessor()
    kwargs = FlowRunEventTrigger(conn_id=conn_id, flow_id=flow_id, poll_interval=FAST_POLL).serialize()[1]

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[str]]:
        first = Triggerer(FlowRunEventTrigger(**kwargs), store)
        await until(lambda: bool(store.values))  # the start is stored before anything is announced
        started = await asyncio.to_thread(manual_runs, emulator, "tableflow", flow_id, 5)
        stored = await first.next_events(3, stored=True)
        # Airflow resolves an event once the watcher has moved past it: taking the next ones resolves the third.
        lost_in_flight = await first.next_events(2, stored=False)
        await until(lambda: _seen(store) == {e["dedup_key"] for e in stored})  # moved once confirmed stored
        await asyncio.sleep(0.5)
        assert _seen(store) == {e["dedup_key"] for e in stored}  # never past an unconfirmed event
        await first.kill()  # the triggerer dies before those two events reach the database

        started += await asyncio.to_thread(manual_runs, emulator, "tableflow", flow_id, 3)  # while down
        second = Triggerer(FlowRunEventTrigger(**kwargs), store)
        after = await second.next_events(5, stored=True)
        await second.kill()
        return stored, lost_in_flight, after, started

    stored, in_flight, after, started = asyncio.run(scenario())
    assert {e["run_id"] for e in stored + after} == set(started)  # nothing lost
    assert {e["dedup_key"] for e in after} >= {e["dedup_key"] for e in in_flight}  # announced again, same key
    assert not {e["dedup_key"] for e in after} & {e["dedup_key"] for e in stored}  # confirmed ones are not


def test_a_stored_position_in_the_future_is_moved_back_to_the_clock(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A position an earlier version stored after a run stamped in year 9999 would announce nothing ever again:
    it is read back no later than the watcher's clock plus CLOCK_SKEW, and runs are announced again."""
    conn_id = connect(monkeypatch, emulator, "tableflow")
    flow_id = FLOWS["tableflow"][0]
    emulator.scenario(flow_id, processing_seconds=0.1)
    trigger = FlowRunEventTrigger(conn_id=conn_id, flow_id=flow_id, poll_interval=FAST_POLL)
    store = MemoryAccessor()
    start = datetime.now(UTC) - timedelta(minutes=1)
    store.values[trigger.position_key] = Position(start, datetime(9999, 12, 31, tzinfo=UTC)).to_json()

    async def scenario() -> tuple[list[str], list[dict[str, Any]]]:
        watching = Triggerer(trigger, store)
        started = await asyncio.to_thread(manual_runs, emulator, "tableflow", flow_id)
        events = await watching.next_events(1, stored=True)
        await watching.kill()
        return started, events

    started, events = asyncio.run(scenario())
    assert [event["run_id"] for event in events] == started
    saved = Position.from_json(store.values[trigger.position_key])
    assert saved.start == start and saved.since <= datetime.now(UTC) + CLOCK_SKEW


def _seen(store: MemoryAccessor) -> set[str]:
    [position] = store.values.values()
    return set(Position.from_json(position).seen)


def test_a_watcher_of_several_assets_keeps_its_position_in_each(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_flowruns.triggers.watch_position import PositionStore

    class Accessors:
        def __init__(self) -> None:
            self._by_name = {"a": MemoryAccessor(), "b": MemoryAccessor()}

    accessors = Accessors()
    store = PositionStore(accessors, "k")
    now = datetime.now(UTC)
    older = Position.starting(now - timedelta(hours=1))

    async def go() -> Position | None:
        await store.save(Position.starting(now))
        await accessors._by_name["b"].aset("k", older.to_json())  # b was told less
        return await store.load()

    assert asyncio.run(go()) == older
    assert accessors._by_name["a"].writes == 1


def test_the_example_consumer_handles_each_dedup_key_once(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("flow_run_events", EXAMPLES / "flow_run_events.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    db = str(tmp_path / "handled.sqlite3")

    def event(run_id: str, state: str = "succeeded") -> dict[str, Any]:
        return {
            "dedup_key": f"tableflow:{run_id}:{state}",
            "run_id": run_id,
            "state": state,
            "task_key": None,
            "url": None,
        }

    assert example.handle_new(db, [event("a"), event("b"), event("a")]) == {
        "handled": ["tableflow:a:succeeded", "tableflow:b:succeeded"],
        "skipped": ["tableflow:a:succeeded"],
    }
    # Announced again after a triggerer restart: skipped; the same run in another state is new.
    assert example.handle_new(db, [event("b"), event("b", "failed")]) == {
        "handled": ["tableflow:b:failed"],
        "skipped": ["tableflow:b:succeeded"],
    }
