"""Listings that never end, from a hostile server on loopback: a repeated page token or offset, a page count in
the billions, pages that are always full, pages that come slowly.

Every worker-side reader of a listing ends within the walk's bounds (``client.listing.LISTING_BOUNDS``) with the
provider's error, having sent at most one request past the pages bound, held one page at a time, and logged
why: the hook's listing, the retry's task-key lookup (which then starts nothing), the export (which publishes
nothing) and a StackAI run read, which ends by the deadline of the wait it serves.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pendulum
import pytest
from airflow.providers.common.compat.sdk import Context

from airflow_flowruns.client.listing import LISTING_BOUNDS
from airflow_flowruns.exceptions import FlowRunsListingError, FlowRunTimeoutError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.operators.export import FlowRunsExportOperator
from airflow_flowruns.platforms.start import StartRequest
from airflow_flowruns.sensors.flow_run import FlowRunSensor
from airflow_flowruns.starting import TaskTry, find_run, start_once
from airflow_flowruns.waiting import OnReview
from support.emulator import set_connection
from support.golden import golden
from support.hostile_server import FLOW_ID, RUN_ID, Answer, Exchange, HostileServer
from test_hostile_platform import KEY, LIMIT, MEMORY_BOUND, assert_no_key, failure
from test_starting import NothingSaved

PAGES = LISTING_BOUNDS.pages
DAY = datetime(2026, 3, 1, tzinfo=UTC)
"""The export's data interval starts here; the TableFlow runs served are created in its first hour."""
TASK_KEY = "af-" + "c" * 24
PAGE_PAUSE = 0.05
"""How long the slow listing takes over each page."""


def params(ex: Exchange) -> dict[str, str]:
    return {name: values[-1] for name, values in parse_qs(urlsplit(ex.path).query).items()}


def send_json(ex: Exchange, body: Any) -> None:
    ex.send(200, json.dumps(body).encode())


def tableflow_runs(*numbers: int) -> list[dict[str, Any]]:
    """Runs ``fr_<n>`` with the fields of TableFlow's listing items the provider reads, newest first, created
    in the first hour of DAY (tens of thousands of them are served: no more fields than needed)."""
    created = int(DAY.timestamp()) + 3600
    return [{"id": f"fr_{n}", "flow_id": FLOW_ID, "status": "completed", "created_at": created - n} for n in numbers]


def tableflow_page(runs: list[dict[str, Any]], next_offset: int | None) -> dict[str, Any]:
    return {"flow_runs": runs, "pagination": {"next_offset": next_offset}}


def extend_same_token(ex: Exchange) -> None:
    """Every page names the one nextPageToken of Extend's golden page."""
    send_json(ex, golden("extend", "runs_page.json"))


def tableflow_same_offset(ex: Exchange) -> None:
    """Every page names offset 2 as the next one."""
    send_json(ex, tableflow_page(tableflow_runs(0, 1), next_offset=2))


def tableflow_always_full(ex: Exchange) -> None:
    """Each page is full and names the next offset; the same two runs are on every page."""
    offset, limit = int(params(ex)["offset"]), int(params(ex)["limit"])
    send_json(ex, tableflow_page(tableflow_runs(*itertools.islice(itertools.cycle((0, 1)), limit)), offset + limit))


def noxus_billions_of_pages(ex: Exchange) -> None:
    """Noxus's golden page, as the page asked for of 10**12."""
    page = int(params(ex)["page"])
    send_json(ex, {**golden("noxus", "runs_page.json"), "page": page, "pages": 10**12, "total": 10**14})


def stackai_always_full(ex: Exchange) -> None:
    """StackAI's golden listing page, two runs: full at the connection's page size of two, never the run asked."""
    send_json(ex, golden("stackai", "flow_runs.json"))


def stackai_slowly_full(ex: Exchange) -> None:
    time.sleep(PAGE_PAUSE)
    stackai_always_full(ex)


@dataclass(frozen=True)
class Endless:
    platform: str
    answer: Answer
    reason: str
    """What the walk's warning and the error say (a substring)."""
    requests: int
    """Requests the walk sends: the pages bound, or two for a repeated page."""


REPEATED = "a repeated page token or offset"
ENDLESS = {
    "Extend repeats its page token": Endless("extend", extend_same_token, REPEATED, 2),
    "TableFlow repeats its offset": Endless("tableflow", tableflow_same_offset, REPEATED, 2),
    "TableFlow pages always full": Endless("tableflow", tableflow_always_full, f"{PAGES} pages read", PAGES),
    "Noxus counts 10**12 pages": Endless("noxus", noxus_billions_of_pages, f"{PAGES} pages read", PAGES),
    "StackAI pages always full": Endless("stackai", stackai_always_full, f"{PAGES} pages read", PAGES),
}

_CONNECTIONS = itertools.count()


@pytest.fixture
def connect(hostile: HostileServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, Answer], str]]:
    """A connection of the given platform to the hostile server, which answers every request with ``answer``."""

    def connection(platform: str, answer: Answer) -> str:
        hostile.requests.clear()
        hostile.answer = answer
        extras: dict[str, Any] = {"org_id": "org_hostile", "page_size": 2} if platform == "stackai" else {}
        return set_connection(
            monkeypatch,
            f"endless_{next(_CONNECTIONS)}",
            platform,
            hostile.url,
            password=KEY,
            timeout=2,
            max_response_bytes=LIMIT,
            max_retries=0,
            **extras,
        )

    yield connection
    hostile.answer = None


def assert_logged_and_said(error: BaseException, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    """The provider's error names platform, call, reason and fix; the warning logged names the reason."""
    assert isinstance(error, FlowRunsListingError), repr(error)
    assert "listing 'list runs' stopped before its last page: " in str(error) and reason in str(error)
    assert "Check the connection's host" in str(error)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("stopped before its last page" in w and reason in w for w in warnings), warnings
    assert_no_key(str(error), caplog.text)


@pytest.mark.parametrize("case", ENDLESS.values(), ids=list(ENDLESS))
def test_the_hooks_listing_ends_with_the_providers_error(
    case: Endless, connect: Callable[[str, Answer], str], hostile: HostileServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    hook = FlowRunsHook(connect(case.platform, case.answer))
    error, peak = failure(lambda: collections.deque(hook.list_runs(flow_id=FLOW_ID, page_size=2), maxlen=0))
    assert_logged_and_said(error, case.reason, caplog)
    assert len(hostile.requests) == case.requests <= PAGES + 1
    assert peak < MEMORY_BOUND, f"{peak / 2**20:.1f} MiB held at the peak"


@pytest.mark.integration  # fifty thousand runs: at scale
def test_runs_beyond_the_items_bound_end_the_listing(
    connect: Callable[[str, Answer], str], hostile: HostileServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Pages of 1,000 runs: the items bound comes before the pages bound, and one page is held at a time."""
    caplog.set_level(logging.WARNING)
    hook = FlowRunsHook(connect("tableflow", tableflow_always_full))
    error, peak = failure(lambda: collections.deque(hook.list_runs(page_size=1000), maxlen=0))
    assert_logged_and_said(error, f"{LISTING_BOUNDS.items} items read", caplog)
    assert len(hostile.requests) == LISTING_BOUNDS.items // 1000
    assert peak < MEMORY_BOUND, f"{peak / 2**20:.1f} MiB held at the peak"


def test_the_triggerers_listing_ends_with_the_providers_error(
    connect: Callable[[str, Answer], str], hostile: HostileServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    hook = FlowRunsHook(connect("extend", extend_same_token))

    async def read_all() -> None:
        try:
            async for _ in hook.alist_runs(flow_id=FLOW_ID):
                pass
        finally:
            await FlowRunsHook.close_async_clients()

    error, _ = failure(lambda: asyncio.run(read_all()))
    assert_logged_and_said(error, REPEATED, caplog)
    assert len(hostile.requests) == 2


LOOKUPS = {name: ENDLESS[name] for name in ("TableFlow repeats its offset", "StackAI pages always full")}
"""The platforms whose runs keep the task key, so that a retry looks it up."""


@pytest.mark.parametrize("case", LOOKUPS.values(), ids=list(LOOKUPS))
def test_the_task_key_lookup_ends_with_the_providers_error(
    case: Endless, connect: Callable[[str, Answer], str], hostile: HostileServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    hook = FlowRunsHook(connect(case.platform, case.answer))
    error, peak = failure(lambda: find_run(hook, FLOW_ID, TASK_KEY))
    assert_logged_and_said(error, case.reason, caplog)
    assert len(hostile.requests) == case.requests
    assert peak < MEMORY_BOUND, f"{peak / 2**20:.1f} MiB held at the peak"


@pytest.mark.parametrize("case", LOOKUPS.values(), ids=list(LOOKUPS))
def test_a_retry_whose_lookup_was_cut_short_starts_no_second_run(
    case: Endless,
    connect: Callable[[str, Answer], str],
    hostile: HostileServer,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """The run of the first try may be on a page never read: the retry fails, to look again on its next try."""
    caplog.set_level(logging.WARNING)
    hook = FlowRunsHook(connect(case.platform, case.answer))
    document = tmp_path / "invoice.pdf"
    document.write_bytes(b"%PDF-1.4\n")
    request = StartRequest(FLOW_ID, {"document": document})
    retry = TaskTry(number=2, runs_since=None, log=logging.getLogger("retry"))
    error, _ = failure(lambda: start_once(hook, request, TASK_KEY, NothingSaved(), retry))
    assert_logged_and_said(error, case.reason, caplog)
    assert {r["method"] for r in hostile.requests} == {"GET"}, "nothing uploaded, nothing started"
    assert len(hostile.requests) == case.requests


def export(conn_id: str, target: Path) -> dict[str, Any]:
    op = FlowRunsExportOperator(task_id="export", flowruns_conn_id=conn_id, destination=f"file://{target}", page_size=2)
    start = pendulum.instance(DAY)
    result: dict[str, Any] = op.execute(Context(data_interval_start=start, data_interval_end=start.add(days=1)))
    return result


def test_an_export_cut_short_fails_and_leaves_the_previous_object(
    connect: Callable[[str, Answer], str], hostile: HostileServer, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.WARNING)
    conn_id = connect("tableflow", tableflow_always_full)
    target = tmp_path / "day.jsonl"
    target.write_text('{"id": "fr_earlier_export"}\n')
    error, peak = failure(lambda: export(conn_id, target))
    assert_logged_and_said(error, f"{PAGES} pages read", caplog)
    assert "shorter data interval" in str(error)
    assert len(hostile.requests) == PAGES
    assert peak < MEMORY_BOUND, f"{peak / 2**20:.1f} MiB held at the peak"
    assert target.read_text() == '{"id": "fr_earlier_export"}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["day.jsonl"], "no partial object left behind"


def test_an_export_writes_a_run_listed_on_two_pages_once(
    connect: Callable[[str, Answer], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An offset listing shifts by one when a run is created while it is read: fr_1 is on both pages."""
    pages = {"0": tableflow_page(tableflow_runs(0, 1), 2), "2": tableflow_page(tableflow_runs(1, 2), None)}
    conn_id = connect("tableflow", lambda ex: send_json(ex, pages[params(ex)["offset"]]))
    target = tmp_path / "day.jsonl"
    assert export(conn_id, target)["rows"] == 3
    assert [json.loads(line)["id"] for line in target.read_text().splitlines()] == ["fr_0", "fr_1", "fr_2"]
    assert "gave 1 run(s) a second time" in capsys.readouterr().out, "the task's log says so"


def test_a_stackai_wait_ends_at_its_deadline_though_the_listing_never_ends(
    connect: Callable[[str, Answer], str],
    hostile: HostileServer,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """StackAI has no call that reads one run: each poll walks the listing, here full pages that come slowly and
    never show the run. The walk stops at the wait's deadline, and the wait ends with its timeout then."""
    caplog.set_level(logging.WARNING)
    hook = FlowRunsHook(connect("stackai", stackai_slowly_full))
    span = 1.0
    started = time.monotonic()

    def wait() -> object:
        return hook.wait_for_run(
            FLOW_ID, RUN_ID, deadline=time.time() + span, poll_interval=0.5, on_review=OnReview.WAIT
        )

    error, _ = failure(wait)
    elapsed = time.monotonic() - started
    assert isinstance(error, FlowRunTimeoutError), repr(error)
    assert f"Deadline reached before run {RUN_ID!r} could be read once" in str(error)
    assert elapsed < span + 2 * PAGE_PAUSE + 2, "by the deadline, plus at most one page's request"
    assert len(hostile.requests) <= span / PAGE_PAUSE + 2 < PAGES
    assert "s spent, after" in caplog.text
    assert "failed for now, will poll again" in capsys.readouterr().out, "the task's log says why it went on"


def test_a_deferrable_stackai_sensor_reads_its_run_no_longer_than_its_timeout(
    connect: Callable[[str, Answer], str], hostile: HostileServer, mocker: Any
) -> None:
    """A deferrable sensor reads its run once before it defers; on StackAI that read walks the listing, which
    here never ends and comes slowly. The read stops at the sensor's timeout, not at the listing's own
    five minutes, and says why."""
    conn_id = connect("stackai", stackai_slowly_full)
    span = 1.0
    sensor = FlowRunSensor(
        task_id="wait", run_id=RUN_ID, flow_id=FLOW_ID, flowruns_conn_id=conn_id, deferrable=True, timeout=span
    )
    started = time.monotonic()
    error, _ = failure(lambda: sensor.execute({"ti": mocker.MagicMock()}))  # type: ignore[arg-type]
    elapsed = time.monotonic() - started
    assert isinstance(error, FlowRunsListingError), repr(error)
    assert "s spent" in str(error)
    assert elapsed < span + 2 * PAGE_PAUSE + 2, "by the timeout, plus at most one page's request"
    assert len(hostile.requests) <= span / PAGE_PAUSE + 2 < PAGES
