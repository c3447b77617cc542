"""Extend's change feed answering the triggerer's polls, over real HTTP against the emulator.

Polls are made by hand, one round after another, so what each round sends is exact and nothing waits on
the clock; the last test follows runs with real triggers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import pytest

from airflow_flowruns.client import AsyncFlowRunsClient, feed
from airflow_flowruns.client.feed_state import FeedClock
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms.base import ApiCall, FlowRun, RunQuery
from airflow_flowruns.platforms.extend import api as extend
from airflow_flowruns.platforms.extend.emulator import EXTEND_INVOICE_WORKFLOW
from airflow_flowruns.triggers.flow_run import FlowRunTrigger
from support.emulator import Emulator, set_connection
from support.runs import follow

PAGE = 25


@pytest.fixture(autouse=True)
def scans_only_when_polled(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rounds of polls made by hand: no scans between them, so each round's requests are exactly its own."""
    if "triggers" not in request.node.name:
        monkeypatch.setattr(feed, "PREFETCH_SCANS_PER_INTERVAL", 0)


@pytest.fixture
def extend_conn(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(extend, "CHANGES_PAGE_SIZE", PAGE)  # small pages, so a scan of a few dozen runs pages
    return set_connection(monkeypatch, "extend_feed", "extend", emulator.url)


def seed(emulator: Emulator, count: int, span: float = 100.0, **scenario: Any) -> list[str]:
    """Runs created an hour ago (over ``span`` seconds) and still queued (unless ``scenario`` says otherwise),
    with metadata only a full read returns."""
    body = {
        "platform": "extend",
        "flow_id": EXTEND_INVOICE_WORKFLOW,
        "count": count,
        "created_from": time.time() - 3600,
        "created_to": time.time() - 3600 + span,
        "scenario": scenario or {"queued_seconds": 7200},
        "metadata": {"batch": "b-1"},
    }
    return emulator.control.post("/seed", json=body).json()["ids"]


def split(requests: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """(feed listing requests, ids of runs read on their own) among the emulator's requests."""
    listings = [r for r in requests if r["path"] == "/workflow_runs" and r["method"] == "GET"]
    reads = [r["path"].rsplit("/", 1)[-1] for r in requests if r["path"].startswith("/workflow_runs/")]
    return listings, reads


Scenario = Callable[[AsyncFlowRunsClient], Awaitable[None]]


def run(conn_id: str, scenario: Scenario) -> None:
    async def main() -> None:
        try:
            await scenario(await FlowRunsHook.get_async_client(conn_id))
        finally:
            await FlowRunsHook.close_async_clients()

    asyncio.run(main())


async def poll(client: AsyncFlowRunsClient, ids: list[str]) -> dict[str, FlowRun]:
    """One round: every run polled at once, as triggers on the same tick poll."""
    runs = await asyncio.gather(*(client.get_run(EXTEND_INVOICE_WORKFLOW, run_id) for run_id in ids))
    return dict(zip(ids, runs, strict=True))


def test_the_feed_answers_many_polls_with_one_request_per_page(extend_conn: str, emulator: Emulator) -> None:
    ids = seed(emulator, 60)

    async def scenario(client: AsyncFlowRunsClient) -> None:
        first = await poll(client, ids)
        assert {run.status for run in first.values()} == {"PENDING"}
        _, reads = split(emulator.requests())
        assert sorted(reads) == sorted(ids), "the first poll of each run reads it"

        emulator.clear_requests()
        quiet = await poll(client, ids)
        listings, reads = split(emulator.requests())
        assert reads == [] and len(listings) == 1, "nothing changed: one page back to the watermark"
        assert parse_qs(listings[0]["query"]) == {"sortBy": ["updatedAt"], "sortDir": ["desc"], "maxPageSize": ["25"]}
        assert quiet == first

        for run_id in ids[:40]:
            emulator.set_status(run_id, "PROCESSING")
        emulator.clear_requests()
        busy = await poll(client, ids)
        listings, reads = split(emulator.requests())
        assert reads == [], "a run gone from queued to processing is described by its summary"
        assert len(listings) == 2, "40 changes on pages of 25: two pages answer the 60 polls"
        assert "nextPageToken" not in parse_qs(listings[0]["query"])
        assert "nextPageToken" in parse_qs(listings[1]["query"])
        assert [busy[i].status for i in ids] == ["PROCESSING"] * 40 + ["PENDING"] * 20

        for run_id in ids[:10]:
            emulator.set_status(run_id, "PROCESSED")
        emulator.clear_requests()
        done = await poll(client, ids)
        listings, reads = split(emulator.requests())
        assert sorted(reads) == sorted(ids[:10]), "the final read the XCom needs"
        assert len(listings) == 2, "the overlap behind the watermark reaches the last round's 40 changes"
        for run_id in ids[:10]:
            assert done[run_id].status == "PROCESSED" and done[run_id].metadata == {"batch": "b-1"}

    run(extend_conn, scenario)


def test_a_run_whose_summary_shows_a_failure_is_read_once_for_its_details(extend_conn: str, emulator: Emulator) -> None:
    ids = seed(emulator, 30)

    async def scenario(client: AsyncFlowRunsClient) -> None:
        await poll(client, ids)
        emulator.set_status(ids[0], "FAILED", error="OCR failed on page 2")
        emulator.clear_requests()
        answered = await poll(client, ids)
        _, reads = split(emulator.requests())
        assert reads == [ids[0]]
        failed = answered[ids[0]]
        assert failed.state == "failed" and "OCR failed on page 2" in (failed.error or "")
        emulator.clear_requests()
        await poll(client, ids[1:])
        assert split(emulator.requests())[1] == []

    run(extend_conn, scenario)


def test_a_missed_update_is_caught_by_the_safety_net(
    extend_conn: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = seed(emulator, PAGE - 5)  # one page: every scan mentions every run but the hidden one
    hidden = ids[0]
    now = [0.0]

    async def scenario(client: AsyncFlowRunsClient) -> None:
        assert client._feed is not None
        client._feed.clock = FeedClock(monotonic=lambda: now[0])
        call = client._feed._call

        async def listing_that_misses_one(api_call: ApiCall) -> Any:
            """The feed's pages without one run: an update the listing failed to show."""
            body = await call(api_call)
            if api_call.name == "list changed runs":
                body["data"] = [item for item in body["data"] if item["id"] != hidden]
            return body

        client._feed._call = listing_that_misses_one
        await poll(client, [hidden])
        now[0] = 100.0
        await poll(client, ids[1:])
        emulator.set_status(hidden, "PROCESSED")
        emulator.clear_requests()
        now[0] = feed.SAFETY_NET_SECONDS
        missed = await poll(client, ids)
        assert missed[hidden].status == "PENDING" and split(emulator.requests())[1] == []

        now[0] = feed.SAFETY_NET_SECONDS + 50.0
        emulator.clear_requests()
        caught = await poll(client, ids)
        assert split(emulator.requests())[1] == [hidden], "due: read since, not mentioned since"
        assert caught[hidden].status == "PROCESSED"

        monkeypatch.setattr(feed, "SAFETY_NET_READS_PER_SCAN", 3)
        now[0] = feed.SAFETY_NET_SECONDS + 200.0
        emulator.clear_requests()
        await poll(client, ids[1:])
        assert len(split(emulator.requests())[1]) == 3, "every run due: the per-round budget"

    run(extend_conn, scenario)


def test_cursor_tokens_are_never_used_with_another_query(extend_conn: str, emulator: Emulator) -> None:
    """The emulator's tokens, like Extend's, are opaque and valid only with the query that returned them."""
    ids = seed(emulator, 60)

    async def scenario(client: AsyncFlowRunsClient) -> None:
        await poll(client, ids)
        for run_id in ids[:40]:
            emulator.set_status(run_id, "PROCESSING")
        by_creation = RunQuery(flow_id=EXTEND_INVOICE_WORKFLOW, page_size=PAGE)
        emulator.clear_requests()
        for _ in range(2):
            listed, answered = await asyncio.gather(_collect(client.iter_runs(by_creation)), poll(client, ids))
            assert len(listed) == 60 and answered[ids[0]].status == "PROCESSING"
        assert client._feed is not None and client._feed.failed_scans == 0
        listings, reads = split(emulator.requests())
        assert reads == [] and {r["status"] for r in listings} == {200}, "no token was refused"
        firsts = [r for r in listings if "nextPageToken" not in parse_qs(r["query"])]
        assert len(firsts) == 4, "each scan and each listing starts from its first page"

    run(extend_conn, scenario)


async def _collect(runs: Any) -> list[FlowRun]:
    return [run async for run in runs]


FAILED_SCANS = {
    "HTTP 500": (500, json.dumps({"code": "INTERNAL_ERROR", "message": "x"}), True),
    "not JSON": (200, "<html><title>Gateway</title></html>", True),
    "JSON too deep": (200, "[" * 5000 + "]" * 5000, False),
    "a listing of the wrong shape": (200, json.dumps({"data": "not a list of runs", "nextPageToken": None}), False),
    "runs of the wrong shape": (200, json.dumps({"data": [{"id": ["not", "an", "id"]}], "nextPageToken": None}), False),
}
"""Answers of the feed's listing that fail a scan (status, body), and whether the client retries them."""


@pytest.mark.parametrize("answer", FAILED_SCANS)
def test_a_failed_scan_falls_back_to_direct_reads_and_the_next_scan_answers(
    answer: str, extend_conn: str, emulator: Emulator
) -> None:
    status, body, retried = FAILED_SCANS[answer]
    ids = seed(emulator, 30)

    async def scenario(client: AsyncFlowRunsClient) -> None:
        await poll(client, ids)
        for run_id in ids[:5]:
            emulator.set_status(run_id, "PROCESSED")
        attempts = client.options.max_retries + 1 if retried else 1
        emulator.fault("/workflow_runs", status, body, count=attempts)
        emulator.clear_requests()
        answered = await poll(client, ids)
        listings, reads = split(emulator.requests())
        assert [r["status"] for r in listings] == [status] * attempts
        assert sorted(reads) == sorted(ids), "every waiting run read on its own"
        assert [answered[i].status for i in ids] == ["PROCESSED"] * 5 + ["PENDING"] * 25

        emulator.set_status(ids[5], "PROCESSING")
        emulator.clear_requests()
        recovered = await poll(client, ids[5:])
        listings, reads = split(emulator.requests())
        assert reads == [] and [r["status"] for r in listings] == [200], "the feed is not given up"
        assert recovered[ids[5]].status == "PROCESSING"

    run(extend_conn, scenario)


def test_a_key_refused_the_listing_reads_each_run_and_lists_no_more(extend_conn: str, emulator: Emulator) -> None:
    ids = seed(emulator, 10)

    async def scenario(client: AsyncFlowRunsClient) -> None:
        await poll(client, ids)
        refused = {"code": "UNAUTHORIZED", "message": "this key may not list runs", "retryable": False}
        emulator.fault("/workflow_runs", 403, json.dumps(refused))
        emulator.clear_requests()
        for _ in range(2):
            answered = await poll(client, ids)
            assert {run.status for run in answered.values()} == {"PENDING"}
        listings, reads = split(emulator.requests())
        assert [r["status"] for r in listings] == [403] and sorted(reads) == sorted(ids * 2)

    run(extend_conn, scenario)


class CountingTrigger(FlowRunTrigger):
    polls = 0

    async def poll(self) -> FlowRun:
        CountingTrigger.polls += 1
        return await super().poll()


def test_triggers_on_extend_are_answered_by_the_feed(extend_conn: str, emulator: Emulator) -> None:
    ids = seed(emulator, 40, span=0, queued_seconds=0, processing_seconds=3601, processing_jitter_seconds=1.5)
    emulator.clear_requests()
    CountingTrigger.polls = 0
    payloads = follow(extend_conn, "extend", EXTEND_INVOICE_WORKFLOW, ids, 0.3, CountingTrigger)
    assert [(p["outcome"], p["run"]["metadata"]) for p in payloads] == [("settled", {"batch": "b-1"})] * 40
    listings, reads = split(emulator.requests())
    assert all(reads.count(run_id) <= 2 for run_id in ids), "a first read and a final read at most"
    assert len(listings) + len(reads) < CountingTrigger.polls
