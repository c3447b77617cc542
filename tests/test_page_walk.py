"""The walk through a paged listing, with no server: the calls it gives, the pages it makes of the vendors'
own payloads (``tests/golden/``), its bounds against listings that never end (a repeated token or offset, a
page count in the billions, pages always full, an endless clock), its errors, and the clients' drivers
stopping with their reader."""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from airflow_flowruns.client import AsyncFlowRunsClient, FlowRunsClient, HttpOptions
from airflow_flowruns.client.listing import LISTING_BOUNDS, PageWalk, WalkBounds, change_pages, run_pages
from airflow_flowruns.client.retry import until
from airflow_flowruns.exceptions import FlowRunsListingError, FlowRunsResponseError, is_transient
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


def platform(name: str, **extras: Any) -> Platform:
    cls = PLATFORMS[name]
    return cls(ConnectionSettings("walk", API_KEY, cls.default_base_url, extras=extras))


def stackai() -> Platform:
    """StackAI with pages of two runs, as many as its golden listing page holds: each one is full."""
    return platform("stackai", org_id="org_walk", page_size=2)


def tableflow_page(next_offset: int | None) -> dict[str, Any]:
    """TableFlow's golden runs under the paged listing's envelope, naming ``next_offset``."""
    return {"flow_runs": golden("tableflow", "flow_runs.json"), "pagination": {"next_offset": next_offset}}


def noxus_page(call: ApiCall, pages: int) -> dict[str, Any]:
    """Noxus's golden listing page, as page number ``call`` asks for of ``pages``."""
    return {**golden("noxus", "runs_page.json"), "page": (call.params or {})["page"], "pages": pages}


def walked(walk: PageWalk[Any], answer: Callable[[ApiCall], Any]) -> list[ApiCall]:
    """Drive ``walk`` as a client does, ``answer`` giving each call's body; the calls it made (a walk that
    outlives ten times the pages bound is given up, so that an endless one fails instead of hanging)."""
    calls = []
    for call in itertools.islice(walk, 10 * LISTING_BOUNDS.pages):
        calls.append(call)
        walk.send(answer(call))
    return calls


def assert_cut_short(walk: PageWalk[Any], reason: str, caplog: pytest.LogCaptureFixture, *, retryable: bool) -> None:
    """The walk says why it stopped, logged it as a warning, and its reader gets the provider's error."""
    assert walk.cut_short is not None and reason in walk.cut_short
    (record,) = [r for r in caplog.records if r.name == "airflow_flowruns.client.listing"]
    assert record.levelno == logging.WARNING and "stopped before its last page" in record.getMessage()
    assert reason in record.getMessage()
    with pytest.raises(
        FlowRunsListingError, match=f"listing 'list runs' stopped before its last page: .*{reason}"
    ) as raised:
        walk.raise_if_cut_short()
    assert raised.value.retryable is retryable and is_transient(raised.value) is retryable
    assert "Check the connection's host" in str(raised.value) and "shorter data interval" in str(raised.value)


def test_a_repeated_page_token_ends_the_walk(caplog: pytest.LogCaptureFixture) -> None:
    """Extend names the same nextPageToken on every page: the second page is asked once, never again."""
    walk = run_pages(extend(), RunQuery(flow_id=FLOW))
    calls = walked(walk, lambda _: golden("extend", "runs_page.json"))
    assert len(calls) == 2 and calls[1].params and "nextPageToken" in calls[1].params
    assert_cut_short(walk, "repeated page token or offset", caplog, retryable=False)


def test_a_repeated_offset_ends_the_walk(caplog: pytest.LogCaptureFixture) -> None:
    """TableFlow names offset 0, the first page's own, as the next one."""
    walk = run_pages(platform("tableflow"), RunQuery())
    assert len(walked(walk, lambda _: tableflow_page(next_offset=0))) == 1
    assert_cut_short(walk, "repeated page token or offset", caplog, retryable=False)


def test_a_page_count_in_the_billions_ends_at_the_pages_bound(caplog: pytest.LogCaptureFixture) -> None:
    walk = run_pages(platform("noxus"), RunQuery())
    calls = walked(walk, lambda call: noxus_page(call, pages=10**12))
    assert len(calls) == walk.pages == LISTING_BOUNDS.pages
    assert_cut_short(walk, f"{LISTING_BOUNDS.pages} pages read", caplog, retryable=False)


def test_pages_always_full_end_at_the_pages_bound(caplog: pytest.LogCaptureFixture) -> None:
    """StackAI's listing ends on a short page only; a server whose pages are always full never gives one."""
    walk = run_pages(stackai(), RunQuery(flow_id=FLOW))
    calls = walked(walk, lambda _: golden("stackai", "flow_runs.json"))
    assert len(calls) == LISTING_BOUNDS.pages and calls[-1].params == {"page": 199, "page_size": 2}
    assert_cut_short(walk, f"{LISTING_BOUNDS.pages} pages read", caplog, retryable=False)


def test_the_items_bound_ends_the_walk_before_the_next_page(caplog: pytest.LogCaptureFixture) -> None:
    bounds = replace(LISTING_BOUNDS, items=5)
    walk = run_pages(platform("tableflow"), RunQuery(), bounds=bounds)
    calls = walked(walk, lambda call: tableflow_page(next_offset=(call.params or {})["offset"] + 2))
    assert len(calls) == 3 and walk.items == 6, "two runs a page: the third page reaches five"
    assert_cut_short(walk, "5 items read", caplog, retryable=False)


def test_a_walk_ends_once_its_seconds_are_spent_on_an_injected_clock(caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]

    def slow_page(call: ApiCall) -> Any:
        now[0] += 3.0
        return noxus_page(call, pages=10**12)

    platform_ = platform("noxus")
    query = RunQuery()
    bounds = WalkBounds(pages=10**6, items=10**9, seconds=10.0)
    walk = PageWalk(
        platform_,
        platform_.list_runs_call(query),
        lambda body, call: platform_.parse_runs_page(body, call, query),
        bounds=bounds,
        clock=lambda: now[0],
    )
    assert len(walked(walk, slow_page)) == 4, "pages answered at 3, 6, 9 and 12 s: none asked after 10 s"
    assert_cut_short(walk, "10 s spent", caplog, retryable=True)


def test_a_readers_max_pages_is_no_cut(caplog: pytest.LogCaptureFixture) -> None:
    walk = change_pages(extend(), FEED, max_pages=2)
    assert len(walked(walk, lambda _: golden("extend", "runs_page.json"))) == 2
    assert walk.cut_short is None and not caplog.records
    walk.raise_if_cut_short()


def test_a_listing_read_to_its_last_page_is_no_cut(caplog: pytest.LogCaptureFixture) -> None:
    walk = run_pages(extend(), RunQuery(flow_id=FLOW))
    answers = iter([golden("extend", "runs_page.json"), last_page()])
    assert len(walked(walk, lambda _: next(answers))) == 2
    assert walk.cut_short is None and not caplog.records
    walk.raise_if_cut_short()


def endless_client(sent: list[ApiCall]) -> FlowRunsClient:
    """A StackAI client whose every listing page is full (two runs), never showing the run asked for."""
    client = FlowRunsClient(stackai(), HttpOptions())

    def answer(call: ApiCall) -> Any:
        sent.append(call)
        return golden("stackai", "flow_runs.json")

    client.call = answer  # type: ignore[method-assign]
    return client


def test_the_sync_reader_of_every_run_gets_the_runs_read_then_the_error() -> None:
    sent: list[ApiCall] = []
    client = endless_client(sent)
    listed: list[str] = []
    try:
        with pytest.raises(FlowRunsListingError, match="StackAI listing 'list runs' .*200 pages read"):
            listed.extend(run.id for run in client.iter_runs(RunQuery(flow_id=FLOW)))
    finally:
        client.close()
    assert len(sent) == LISTING_BOUNDS.pages and len(listed) == 2 * LISTING_BOUNDS.pages


def test_the_async_reader_of_every_run_gets_the_error() -> None:
    sent: list[ApiCall] = []

    async def answer(call: ApiCall) -> Any:
        sent.append(call)
        return golden("stackai", "flow_runs.json")

    async def read_all() -> None:
        client = AsyncFlowRunsClient(stackai(), HttpOptions())
        client.call = answer  # type: ignore[method-assign]
        try:
            async for _ in client.iter_runs(RunQuery(flow_id=FLOW)):
                pass
        finally:
            await client.aclose()

    with pytest.raises(FlowRunsListingError, match="StackAI listing 'list runs' .*200 pages read"):
        asyncio.run(read_all())
    assert len(sent) == LISTING_BOUNDS.pages


def test_a_run_read_by_walking_the_listing_stops_at_the_tasks_deadline() -> None:
    """StackAI has no call that reads a run: past the deadline of the task waiting on it, a read asks one page,
    and its error is one to poll again after, so the wait reports its timeout."""
    sent: list[ApiCall] = []
    client = endless_client(sent)
    try:
        with until(time.time() - 1), pytest.raises(FlowRunsListingError, match="0 s spent") as raised:
            client.get_run(FLOW, "run_never_listed")
    finally:
        client.close()
    assert len(sent) == 1 and raised.value.retryable
