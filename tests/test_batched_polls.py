"""Polls of many runs of one flow answered by one listing, over real HTTP; the client made once per loop."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import parse_qs

import pytest

from airflow_flowruns.client import AsyncFlowRunsClient, batching
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms.stackai.emulator import STACKAI_FLOW, STACKAI_ORG
from support import runs
from support.emulator import FAST_RETRIES, Emulator, set_connection
from support.runs import RECONCILIATION_FLOW

RUNS = 3 * batching.BATCH_MIN_RUNS


def seed(
    emulator: Emulator, count: int, age: float, processing: float, jitter: float = 0.0, span: float = 1.0
) -> list[str]:
    """``count`` runs created ``age`` seconds ago (over ``span`` seconds), finishing ``processing`` (plus up to
    ``jitter``) seconds after their creation is ``age`` old."""
    created_from = time.time() - age
    body = {
        "platform": "tableflow",
        "flow_id": RECONCILIATION_FLOW,
        "count": count,
        "created_from": created_from,
        "created_to": created_from + span,
        "scenario": {"processing_seconds": age + processing, "processing_jitter_seconds": jitter},
    }
    return emulator.control.post("/seed", json=body).json()["ids"]


def follow(conn_id: str, ids: list[str], poll_interval: float = 0.4) -> list[dict[str, Any]]:
    return runs.follow(conn_id, "tableflow", RECONCILIATION_FLOW, ids, poll_interval)


def calls(emulator: Emulator) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(listing requests, single-run reads) the emulator received."""
    requests = emulator.requests()
    return (
        [r for r in requests if r["path"] == "/v2/flows/runs"],
        [r for r in requests if r["path"].startswith("/v2/flows/runs/")],
    )


def check_events(emulator: Emulator, ids: list[str], payloads: list[dict[str, Any]]) -> None:
    """Each trigger ended with its own run, in the state the emulator holds for it."""
    final = {run["id"]: run["status"] for run in emulator.runs()}
    assert [p["run_id"] for p in payloads] == ids
    for payload in payloads:
        assert payload["outcome"] == "settled"
        assert payload["run"]["id"] == payload["run_id"]
        assert payload["run"]["status"] == final[payload["run_id"]] == "completed"


def test_polls_of_one_flow_share_one_listing(tableflow_conn: str, emulator: Emulator) -> None:
    # They finish together, so no poll is ever one of fewer than BATCH_MIN_RUNS (those read their runs).
    ids = seed(emulator, RUNS, age=60, processing=1.0, span=0)
    emulator.clear_requests()
    payloads = follow(tableflow_conn, ids)
    check_events(emulator, ids, payloads)
    listings, reads = calls(emulator)
    # A tick with fewer than BATCH_MIN_RUNS runs still live reads them one by one, as designed: on a loaded
    # machine the triggers drift apart, and the last few to settle may be read so. Never the bulk of them.
    read = {r["path"] for r in reads}
    assert len(read) < batching.BATCH_MIN_RUNS, f"{len(read)} runs were read one by one, not through the listing"
    # All the triggers poll on the same ticks: one listing request per tick answers all of them.
    assert 2 <= len(listings) < RUNS / 4
    query = parse_qs(listings[0]["query"])
    assert query["flow_id"] == [RECONCILIATION_FLOW] and query["limit"] == ["1000"]


def test_runs_past_the_pages_read_are_read_alone(
    tableflow_conn: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batching, "MAX_PAGES_PER_BATCH", 1)
    ids = seed(emulator, RUNS, age=7200, processing=0.6, jitter=1.0)
    seed(emulator, 1000, age=120, processing=-120)  # newer runs fill the first page
    emulator.clear_requests()
    payloads = follow(tableflow_conn, ids)
    check_events(emulator, ids, payloads)
    listings, reads = calls(emulator)
    assert listings and all(parse_qs(r["query"])["offset"] == ["0"] for r in listings)
    assert {r["path"].rsplit("/", 1)[-1] for r in reads} == set(ids)


def test_a_refused_listing_falls_back_to_reading_each_run(tableflow_conn: str, emulator: Emulator) -> None:
    ids = seed(emulator, RUNS, age=60, processing=0.6, jitter=1.0)
    emulator.clear_requests()
    emulator.fault("/v2/flows/runs", 403, json.dumps({"error": "Forbidden", "message": "missing scope runs:list"}))
    payloads = follow(tableflow_conn, ids)
    check_events(emulator, ids, payloads)
    listings, reads = calls(emulator)
    assert len(listings) == 1, "a listing the key may not use is not asked for again"
    assert listings[0]["status"] == 403
    assert {r["path"].rsplit("/", 1)[-1] for r in reads} == set(ids)


UNREADABLE_LISTINGS = {
    "not JSON": ("<html><title>Gateway</title></html>", True),
    "JSON too deep": ("[" * 5000 + "]" * 5000, False),
    "a listing of the wrong shape": (json.dumps({"flow_runs": "none", "pagination": {}}), False),
    "runs of the wrong shape": (
        json.dumps({"flow_runs": [{"id": ["not", "an", "id"]}], "pagination": {"next_offset": None}}),
        False,
    ),
}
"""Listing answers this provider cannot read, and whether the client retries them."""


@pytest.mark.parametrize("answer", UNREADABLE_LISTINGS)
def test_an_unreadable_listing_falls_back_to_reading_each_run(
    answer: str, tableflow_conn: str, emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    body, retried = UNREADABLE_LISTINGS[answer]
    ids = seed(emulator, RUNS, age=60, processing=1.0, span=0)
    emulator.clear_requests()
    attempts = FAST_RETRIES["max_retries"] + 1 if retried else 1
    emulator.fault("/v2/flows/runs", 200, body, count=attempts)
    payloads = follow(tableflow_conn, ids)
    check_events(emulator, ids, payloads)
    reads = calls(emulator)[1]
    assert {r["path"].rsplit("/", 1)[-1] for r in reads} == set(ids), "the first round read every run alone"
    assert "reading those runs one by one" in caplog.text


@pytest.mark.parametrize("answer", UNREADABLE_LISTINGS)
def test_an_unreadable_listing_is_not_given_up(answer: str, tableflow_conn: str, emulator: Emulator) -> None:
    """Round by round on one client: the round the listing fails reads each run, the next lists again."""
    body, retried = UNREADABLE_LISTINGS[answer]
    ids = seed(emulator, RUNS, age=60, processing=3600)  # still running: each round polls every run
    emulator.fault("/v2/flows/runs", 200, body, count=FAST_RETRIES["max_retries"] + 1 if retried else 1)
    emulator.clear_requests()

    async def two_rounds() -> list[tuple[list[int], int]]:
        try:
            client = await FlowRunsHook.get_async_client(tableflow_conn)
            rounds = []
            for _ in range(2):
                runs = await asyncio.gather(*(client.get_run(RECONCILIATION_FLOW, run_id) for run_id in ids))
                assert [run.id for run in runs] == ids
                listings, reads = calls(emulator)
                rounds.append(([r["status"] for r in listings], len(reads)))
                emulator.clear_requests()
            return rounds
        finally:
            await FlowRunsHook.close_async_clients()

    (failed, read_alone), (listed, read_then) = asyncio.run(two_rounds())
    assert failed and read_alone == len(ids), "the round the listing failed read each run on its own"
    assert listed == [200] and read_then == 0, "the next round is answered by the listing again"


def test_a_few_polls_read_their_runs(tableflow_conn: str, emulator: Emulator) -> None:
    count = batching.BATCH_MIN_RUNS - 1
    ids = seed(emulator, count, age=60, processing=0.3)
    emulator.clear_requests()
    payloads = follow(tableflow_conn, ids)
    check_events(emulator, ids, payloads)
    listings, reads = calls(emulator)
    assert listings == [] and len(reads) >= count


def test_triggers_starting_together_share_one_client(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, mocker: Any
) -> None:
    """Fifty triggers asking at once get one client; a failed attempt is forgotten once the connection exists."""
    made = mocker.spy(AsyncFlowRunsClient, "__init__")

    async def fifty() -> set[int]:
        return {id(c) for c in await asyncio.gather(*(FlowRunsHook.get_async_client("late_conn") for _ in range(50)))}

    async def scenario() -> set[int]:
        try:
            with pytest.raises(Exception, match="late_conn"):
                await fifty()
            set_connection(monkeypatch, "late_conn", "tableflow", emulator.url)
            return await fifty()
        finally:
            await FlowRunsHook.close_async_clients()

    assert len(asyncio.run(scenario())) == 1
    assert made.call_count == 1


def test_stackai_sensors_of_one_flow_share_one_walk_of_the_listing(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """StackAI has no call that reads one run: each poll alone walks the flow's analytics listing."""
    conn = set_connection(monkeypatch, "stackai_batched", "stackai", emulator.url, org_id=STACKAI_ORG, page_size=50)
    spec = {"platform": "stackai", "flow_id": STACKAI_FLOW, "count": 120, "scenario": {"processing_seconds": 3600}}
    ids = emulator.control.post("/seed", json=spec).json()["ids"]
    waited = ids[:5]
    emulator.clear_requests()

    async def three_rounds() -> list[list[str]]:
        try:
            client = await FlowRunsHook.get_async_client(conn)
            rounds = []
            for forced in ("RESUMED", "PAUSED", "COMPLETED"):
                for run_id in waited:
                    emulator.set_status(run_id, forced)
                runs = await asyncio.gather(*(client.get_run(STACKAI_FLOW, run_id) for run_id in waited))
                rounds.append([run.status for run in runs])
            return rounds
        finally:
            await FlowRunsHook.close_async_clients()

    assert asyncio.run(three_rounds()) == [[s] * 5 for s in ("RESUMED", "PAUSED", "COMPLETED")]
    pages = [parse_qs(r["query"])["page"] for r in emulator.requests()]
    assert len(pages) <= 3 * 3, "at most one walk of the listing (120 runs, 50 a page) per round of five polls"
