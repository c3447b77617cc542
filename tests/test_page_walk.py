"""The walk through a paged listing, with no server: the calls it gives, the pages it makes of the vendors'
own payloads (``tests/golden/``), its bound, its errors, and the clients' drivers stopping with their reader."""

from __future__ import annotations

import asyncio
import copy
import itertools
from typing import Any

import pytest

from airflow_flowruns.client import AsyncFlowRunsClient, FlowRunsClient, HttpOptions
from airflow_flowruns.client.listing import PageWalk, change_pages, run_pages
from airflow_flowruns.exceptions import FlowRunsResponseError
from airflow_flowruns.platforms import PLATFORMS
from airflow_flowruns.platforms.base import ApiCall, ConnectionSettings, Platform, RunQuery, RunsPage, RunState
from airflow_flowruns.platforms.extend.api import Extend
from support.golden import golden

API_KEY = "sk_walk_0123456789"
FLOW = "workflow_BMdfq_yWM3sT-ZzvCnA3f"
"""The workflow of the runs on Extend's golden listing page."""
FEED = Extend.change_feed_call()


def extend() -> Platform:
    return PLATFORMS["extend"](ConnectionSettings("walk", API_KEY, PLATFORMS["extend"].default_base_url))


def last_page() -> Any:
    """Extend's golden listing page as the last one: without a next page token."""
    body = copy.deepcopy(golden("extend", "runs_page.json"))
    del body["nextPageToken"]
    return body


def test_a_walk_follows_each_pages_next_call_until_a_page_names_none() -> None:
    platform = extend()
    query = RunQuery(flow_id=FLOW)
    walk = run_pages(platform, query)
    first = next(walk)
    assert first == platform.list_runs_call(query)
    page = walk.send(golden("extend", "runs_page.json"))
    assert [run.id for run in page.runs][:2] == [
        "workflow_run_newest0000000000000a",
        "workflow_run_review00000000000000b",
    ]
    second = next(walk)
    token = golden("extend", "runs_page.json")["nextPageToken"]
    assert second == page.next_call and second.params == {**(first.params or {}), "nextPageToken": token}
    assert walk.send(last_page()).next_call is None
    assert next(walk, None) is None, "the page naming no next one is the last"
    assert walk.pages == 2


def test_a_walk_reads_no_more_than_its_bound_though_every_page_names_a_next_one() -> None:
    walk = change_pages(extend(), FEED, max_pages=2)
    pages = [walk.send(golden("extend", "runs_page.json")) for _ in itertools.islice(walk, 3)]
    assert len(pages) == 2 and all(page.next_call is not None for page in pages)
    assert pages[0].changes[0].id == "workflow_run_newest0000000000000a"
    assert pages[0].changes[0].state is RunState.RUNNING


def test_a_walk_starts_where_its_reader_says() -> None:
    """The asset watcher asks the run listing newest change first, not in the platform's own order."""
    platform = extend()
    query = RunQuery(flow_id=FLOW)
    by_change = ApiCall("list runs", "GET", "/workflow_runs", params={"sortBy": "updatedAt"})
    assert next(run_pages(platform, query, by_change)) is by_change


def test_an_unreadable_page_is_the_providers_own_error_naming_platform_and_call_without_the_key() -> None:
    def parse(body: Any, call: ApiCall) -> RunsPage:
        raise KeyError(f"no runs for {API_KEY}")

    walk = PageWalk(extend(), ApiCall("list runs", "GET", "/workflow_runs"), parse)
    next(walk)
    with pytest.raises(FlowRunsResponseError, match="Extend API call 'list runs' gave an answer") as raised:
        walk.send({})
    assert API_KEY not in str(raised.value) and "***" in str(raised.value)


def test_a_page_of_the_wrong_shape_is_the_providers_own_error() -> None:
    walk = change_pages(extend(), FEED)
    next(walk)
    with pytest.raises(FlowRunsResponseError, match="Extend returned a run listing this provider cannot read"):
        walk.send({"data": "not a list"})


def test_a_walk_refuses_a_body_before_it_gave_the_call_that_answers_it() -> None:
    walk = run_pages(extend(), RunQuery(flow_id=FLOW))
    with pytest.raises(RuntimeError, match="before it gave the call"):
        walk.send(golden("extend", "runs_page.json"))


def test_the_sync_driver_asks_for_no_page_its_reader_does_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    client = FlowRunsClient(extend(), HttpOptions())
    sent: list[ApiCall] = []

    def answer(call: ApiCall) -> Any:
        sent.append(call)
        return golden("extend", "runs_page.json")

    monkeypatch.setattr(client, "call", answer)
    try:
        for page in client.walk_pages(run_pages(client.platform, RunQuery(flow_id=FLOW))):
            assert page.runs
            break
    finally:
        client.close()
    assert len(sent) == 1, "every page names a next one: only the reader stopped the walk"


def test_the_async_driver_asks_for_no_page_its_reader_does_not_read() -> None:
    sent: list[ApiCall] = []

    async def answer(call: ApiCall) -> Any:
        sent.append(call)
        return golden("extend", "runs_page.json")

    async def read_one_page() -> None:
        client = AsyncFlowRunsClient(extend(), HttpOptions())
        client.call = answer  # type: ignore[method-assign]
        try:
            async for page in client.walk_pages(change_pages(client.platform, FEED)):
                assert page.changes
                break
        finally:
            await client.aclose()

    asyncio.run(read_one_page())
    assert len(sent) == 1, "every page names a next one: only the reader stopped the walk"
