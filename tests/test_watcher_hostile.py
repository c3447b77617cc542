"""The asset watcher against listings no platform should send, from the hostile server on loopback: a listing
that never ends (a page token or offset it gave before, a page count in the billions, pages always full), runs
stamped in the future, a run on two pages, the key echoed back. Polls are driven directly (``poll``,
``announcements``), each in an event loop of its own; a listing is answered in each platform's own shape."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.triggers import watcher as watcher_module
from airflow_flowruns.triggers.watch_position import CLOCK_SKEW, Position
from airflow_flowruns.triggers.watcher import FlowRunEventTrigger, Poll
from support.emulator import set_connection
from support.hostile_server import Exchange, HostileServer
from support.measure import HANG_GUARD, measured
from support.watching import until

KEY = "hostile-watch-key-5e8a1c"
FLOW = "flow_watched"
ORG = "org_watched"
MEMORY_BOUND = 16 * 1024 * 1024
"""Held at the peak of one poll of a listing that never ends; holding every run it lists would take the
runs of 200 pages."""
"""Only so that a regression fails instead of freezing the suite; no test asserts on time."""
EVENTS = 10
"""``max_events_per_poll`` of the watchers here."""
_CONNECTIONS = itertools.count()


@dataclass(frozen=True)
class Listed:
    """A run as a listing shows it: ``at`` is when it entered its state; ``{key}`` in a text is replaced by
    the credentials the request carried (a platform that echoes them)."""

    id: str
    at: datetime
    done: bool = True
    status: str | None = None
    url: str | None = None


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _tableflow(run: Listed) -> dict[str, Any]:
    return {
        "id": run.id,
        "flow_id": FLOW,
        "status": run.status or ("completed" if run.done else "processing"),
        "created_at": _iso(run.at - timedelta(seconds=30)),
        "start_time": _iso(run.at - timedelta(seconds=30)),
        "end_time": _iso(run.at) if run.done else None,
        "updated_at": _iso(run.at),
        "metadata": {},
    }


def _extend(run: Listed) -> dict[str, Any]:
    return {
        "object": "workflow_run",
        "id": run.id,
        "status": run.status or ("PROCESSED" if run.done else "PROCESSING"),
        "workflow": {"object": "workflow", "id": FLOW},
        "dashboardUrl": run.url or f"https://dashboard.extend.ai/workflows/runs/{run.id}",
        "createdAt": _iso(run.at - timedelta(seconds=30)),
        "startTime": _iso(run.at - timedelta(seconds=30)),
        "endTime": _iso(run.at) if run.done else None,
        "updatedAt": _iso(run.at),
    }


def _noxus(run: Listed) -> dict[str, Any]:
    return {
        "id": run.id,
        "workflow_id": FLOW,
        "status": run.status or ("completed" if run.done else "running"),
        "created_at": _iso(run.at - timedelta(seconds=30)),
        "finished_at": _iso(run.at) if run.done else None,
    }


def _stackai(run: Listed) -> dict[str, Any]:
    return {
        "run_id": run.id,
        "date": _iso(run.at - timedelta(seconds=30)),
        "state": run.status or ("COMPLETED" if run.done else "RESUMED"),
        "latency": 30.0,
        "user_id": None,
        "error": None,
        "outputs": None,
    }


@dataclass(frozen=True)
class Shape:
    """A platform's run listing: where it is, its items, and how a page names the next one.

    ``index`` is the page a request asks for (0 first); ``body`` makes a page of items that names page
    ``next`` (None: the last page). ``size`` is the page size the request asked for.
    """

    listing: Callable[[str], bool]
    item: Callable[[Listed], dict[str, Any]]
    index: Callable[[dict[str, str]], int]
    size: Callable[[dict[str, str]], int]
    body: Callable[[list[dict[str, Any]], int | None], Any]
    reads: str | None = None
    """The path before a run id where the watcher reads one run (Extend, for its task key)."""


SHAPES = {
    "tableflow": Shape(
        lambda path: path.endswith("/flows/runs"),
        _tableflow,
        lambda params: int(params.get("offset", 0)),
        lambda params: int(params["limit"]),
        lambda items, nxt: {"flow_runs": items, "pagination": {"next_offset": nxt}},
    ),
    "extend": Shape(
        lambda path: path.endswith("/workflow_runs"),
        _extend,
        lambda params: int(params.get("nextPageToken", 0)),
        lambda params: int(params["maxPageSize"]),
        lambda items, nxt: {"object": "list", "data": items, "nextPageToken": None if nxt is None else str(nxt)},
        reads="/workflow_runs/",
    ),
    "noxus": Shape(
        lambda path: path.endswith(f"/v1/workflows/{FLOW}/runs"),
        _noxus,
        lambda params: int(params["page"]) - 1,
        lambda params: int(params["size"]),
        # The next page asked for is the page this one says it is, plus one: page ``nxt`` is 1-based ``nxt + 1``.
        lambda items, nxt: {"items": items, "page": 1 if nxt is None else nxt, "pages": 1 if nxt is None else 10**9},
    ),
    "stackai": Shape(
        lambda path: path.endswith(f"/analytics/org/{ORG}/flows/{FLOW}"),
        _stackai,
        lambda params: int(params["page"]),
        lambda params: int(params["page_size"]),
        lambda items, nxt: items,  # a full page names the next one
    ),
}
PLATFORMS = sorted(SHAPES)

Pages = Callable[[int, int], tuple[list[Listed], int | None]]
"""The runs on the page asked for (its index, the page size asked for), and the index of the page it names next."""


def finite(*pages: list[Listed]) -> Pages:
    def page(index: int, size: int) -> tuple[list[Listed], int | None]:
        if index >= len(pages):
            return [], None
        return pages[index], index + 1 if index + 1 < len(pages) else None

    return page


def endless(names_next: Callable[[int], int], at: datetime, done: bool = True) -> Pages:
    """Full pages of runs never listed before, each naming ``names_next(its index)``."""
    ids = itertools.count()

    def page(index: int, size: int) -> tuple[list[Listed], int | None]:
        return [Listed(f"endless-{next(ids)}", at, done) for _ in range(size)], names_next(index)

    return page


@dataclass
class PlatformAnswers:
    """The hostile server answering as one platform, with the test's pages."""

    name: str
    hostile: HostileServer
    pages: Pages = field(default_factory=lambda: finite())
    read_status: int = 200

    def answer(self, ex: Exchange) -> None:
        shape = SHAPES[self.name]
        url = urlsplit(ex.path)
        params = dict(parse_qsl(url.query))
        if shape.reads is not None and shape.reads in url.path:
            run_id = unquote(url.path.rsplit("/", 1)[-1])
            run = {**shape.item(Listed(run_id, datetime.now(UTC))), "stepRuns": [], "metadata": {}}
            self._send(ex, self.read_status, {"workflowRun": run} if self.read_status == 200 else {"detail": "gone"})
        elif shape.listing(url.path):
            runs, nxt = self.pages(shape.index(params), shape.size(params))
            self._send(ex, 200, shape.body([shape.item(run) for run in runs], nxt))
        else:
            self._send(ex, 404, {"detail": f"no {url.path}"})

    @staticmethod
    def _send(ex: Exchange, status: int, body: Any) -> None:
        ex.send(status, json.dumps(body).replace("{key}", ex.credentials()).encode())

    def listings(self) -> int:
        shape = SHAPES[self.name]
        return sum(1 for request in self.hostile.requests if shape.listing(urlsplit(request["path"]).path))


Serve = Callable[..., tuple[PlatformAnswers, str]]


@pytest.fixture
def serve(hostile: HostileServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Serve]:
    """``serve(platform, **extras)``: the hostile server answers as ``platform``, on a connection of its own
    with ``extras``; the answers and the connection's id."""

    def make(name: str, **extras: Any) -> tuple[PlatformAnswers, str]:
        platform = PlatformAnswers(name, hostile)
        hostile.requests.clear()
        hostile.answer = platform.answer
        if name == "stackai":
            extras = {"org_id": ORG, **extras}
        conn_id = f"hostile_watch_{next(_CONNECTIONS)}"
        set_connection(monkeypatch, conn_id, name, hostile.url, password=KEY, max_retries=0, **extras)
        return platform, conn_id

    yield make
    hostile.answer = None


def watching(conn_id: str, **kwargs: Any) -> FlowRunEventTrigger:
    return FlowRunEventTrigger(conn_id=conn_id, flow_id=FLOW, max_events_per_poll=EVENTS, **kwargs)


def polled(trigger: FlowRunEventTrigger, position: Position) -> Poll:
    """One poll, in an event loop of its own."""

    async def one() -> Poll:
        try:
            return await asyncio.wait_for(trigger.poll(position), HANG_GUARD)
        finally:
            await FlowRunsHook.close_async_clients()

    return asyncio.run(one())


def run_ids(poll: Poll) -> list[str]:
    return [payload["run_id"] for payload, _ in poll.announced]


# --- a listing that never ends ------------------------------------------------------------------------

ENDLESS = {
    "a repeated page offset": ("tableflow", lambda index: 1),
    "page offsets forever": ("tableflow", lambda index: index + 1),
    "a repeated page token": ("extend", lambda index: 1),
    "page tokens forever": ("extend", lambda index: index + 1),
    "a billion pages": ("noxus", lambda index: index + 1),
    "pages always full": ("stackai", lambda index: index + 1),
}


@pytest.mark.parametrize("case", ENDLESS)
def test_a_listing_that_never_ends_costs_one_bounded_poll(case: str, serve: Serve) -> None:
    name, names_next = ENDLESS[case]
    platform, conn_id = serve(name)
    now = datetime.now(UTC)
    platform.pages = endless(names_next, now - timedelta(minutes=30))
    trigger = watching(conn_id)
    start = Position.starting(now - timedelta(hours=1))

    poll, peak = measured(lambda: polled(trigger, start))
    assert poll.cut_short is not None and not poll.saw_everything
    assert len(poll.announced) == EVENTS  # the oldest it read, announced: the position moves past them only
    assert platform.listings() <= trigger.walk_bounds.pages + 1
    assert peak < MEMORY_BOUND, f"{peak / 2**20:.1f} MiB held at the peak"

    # The next poll runs as usual: the platform mended, a genuine run is announced.
    position = poll.announced[-1][1]
    genuine = Listed("genuine", datetime.now(UTC))
    platform.pages = finite([genuine])
    mended = polled(trigger, position)
    assert run_ids(mended) == ["genuine"] and mended.saw_everything


def test_a_slow_listing_that_never_ends_stops_at_the_polls_deadline(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll reads for at most ``WALK_INTERVALS`` poll intervals (here, with no minimum, half a second), not
    the listing's own five minutes: a platform answering each page slowly still costs one bounded poll."""
    platform, conn_id = serve("noxus")
    pages = endless(lambda index: index + 1, datetime.now(UTC) - timedelta(minutes=30))
    pause = 0.1

    def slowly(index: int, size: int) -> tuple[list[Listed], int | None]:
        time.sleep(pause)  # the server's own pace: every page takes this long to come
        return pages(index, size)

    platform.pages = slowly
    monkeypatch.setattr(watcher_module, "WALK_MIN_SECONDS", 0.0)
    trigger = watching(conn_id, poll_interval=0.25)
    assert trigger.walk_bounds.seconds == 0.5

    poll = polled(trigger, Position.starting(datetime.now(UTC) - timedelta(hours=1)))
    assert poll.cut_short == "0.5 s spent"
    assert platform.listings() <= 0.5 / pause + 2


def test_a_poll_cut_short_does_not_move_the_position_to_its_start(
    serve: Serve,
) -> None:
    """The first poll reads a listing that repeats its page offset, with nothing to announce; a run that ended
    ten minutes before it, which a listing shows only later, is still announced: the poll that did not read
    everything did not settle the position at its start (which would put that run behind the watermark)."""
    platform, conn_id = serve("tableflow")
    now = datetime.now(UTC)
    repeating = endless(lambda index: 1, now, done=False)  # running runs only: nothing to announce
    late = Listed("listed-late", now - timedelta(minutes=10))

    def pages(index: int, size: int) -> tuple[list[Listed], int | None]:
        # The first poll asks for page 0, then page 1, which names page 1 again: the walk stops there.
        return repeating(index, size) if platform.listings() <= 2 else finite([late])(index, size)

    platform.pages = pages
    trigger = watching(conn_id, poll_interval=0.05)
    settled: list[Position] = []

    async def first_announcements() -> list[str]:
        async def note(position: Position) -> None:
            settled.append(position)

        announcements = trigger.announcements(Position.starting(now - timedelta(hours=1)), on_settled=note)
        first = asyncio.ensure_future(anext(announcements))
        try:
            # The listing mended, the run is announced at the next poll, or never: four polls later it has not been.
            await until(lambda: first.done() or platform.listings() >= 6, HANG_GUARD)
            return [first.result()[0]["run_id"]] if first.done() else []
        finally:
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
            await FlowRunsHook.close_async_clients()

    assert asyncio.run(first_announcements()) == ["listed-late"]
    assert settled == []  # no poll before it read the whole listing


def test_a_poll_cut_short_announces_what_it_read_without_passing_older_runs_it_did_not(serve: Serve) -> None:
    """A listing read newest first is cut short after its first page, which holds a run ended a minute ago;
    a run that ended ten minutes ago is on the page the poll never read. The first poll announces the newer
    run but keeps the watermark, so the next poll, over the mended listing, still announces the older run."""
    platform, conn_id = serve("tableflow")
    now = datetime.now(UTC)
    newer, older = (
        Listed("ended-a-minute-ago", now - timedelta(minutes=1)),
        Listed("ended-long-ago", now - timedelta(minutes=10)),
    )
    mended = finite([newer], [older])

    def pages(index: int, size: int) -> tuple[list[Listed], int | None]:
        if platform.listings() <= 2:  # page 0, then page 1 naming page 1 again: the walk stops there
            return ([newer], 1) if index == 0 else ([Listed("still-running", now, done=False)], 1)
        return mended(index, size)

    platform.pages = pages
    trigger = watching(conn_id)
    first = polled(trigger, Position.starting(now - timedelta(hours=1)))
    assert first.cut_short is not None and run_ids(first) == [newer.id]
    second = polled(trigger, first.announced[-1][1])
    assert second.cut_short is None and run_ids(second) == [older.id]


# --- runs stamped in the future -----------------------------------------------------------------------

FUTURE: dict[str, timedelta | datetime] = {
    "a day ahead": timedelta(days=1),
    "in year 9999": datetime(9999, 12, 31, 23, tzinfo=UTC),
}


@pytest.mark.parametrize("stamp", FUTURE)
@pytest.mark.parametrize("name", PLATFORMS)
def test_a_run_stamped_in_the_future_is_announced_once_and_silences_nothing(
    name: str, stamp: str, serve: Serve
) -> None:
    platform, conn_id = serve(name)
    now = datetime.now(UTC)
    ahead = FUTURE[stamp]
    future = Listed("from-the-future", now + ahead if isinstance(ahead, timedelta) else ahead)
    platform.pages = finite([future])
    trigger = watching(conn_id)

    first = polled(trigger, Position.starting(now - timedelta(hours=1)))
    assert run_ids(first) == ["from-the-future"]
    position = first.announced[-1][1]
    assert position.since <= datetime.now(UTC) + CLOCK_SKEW  # the watermark stayed by the watcher's clock
    assert Position.from_json(json.loads(json.dumps(position.to_json()))) == position  # and is stored so

    later = Listed("later", datetime.now(UTC))
    platform.pages = finite([future, later])
    second = polled(trigger, position)
    assert run_ids(second) == ["later"]  # announced; the run from the future not again


def test_a_run_stamped_ahead_stays_remembered_until_the_clock_passes_it() -> None:
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    late = watcher_module.LATE_SECONDS
    ahead = now + timedelta(hours=1)
    position = Position.starting(now - timedelta(hours=1)).after("ahead", ahead, late, now)
    assert position.since == now + CLOCK_SKEW

    still_ahead = position.settled(now + timedelta(minutes=30), late)
    assert still_ahead.announced("ahead")  # listed again before its time: not announced again
    passed = still_ahead.settled(ahead + timedelta(seconds=late + 1), late)
    assert not passed.announced("ahead")  # its time and the late span are behind the watermark: forgotten


@pytest.mark.parametrize("saved", [datetime(9999, 12, 31, tzinfo=UTC), datetime.now(UTC) + timedelta(days=2)])
def test_a_saved_position_in_the_future_is_clamped_to_the_clock(saved: datetime) -> None:
    now = datetime.now(UTC)
    stored = Position(now - timedelta(hours=1), saved, {"kept": saved.timestamp()})
    clamped = Position.from_json(stored.to_json()).clamped(now)
    assert clamped.since == now + CLOCK_SKEW and clamped.start == stored.start
    assert clamped.announced("kept")
    assert Position.starting(now).clamped(now) == Position.starting(now)


# --- a run on two pages -------------------------------------------------------------------------------

PAGES_OF_TWO = {"stackai": {"page_size": 2}}
"""StackAI asks for the next page after a full one: of two runs here, the others' pages name the next."""


@pytest.mark.parametrize("name", PLATFORMS)
def test_a_run_listed_on_two_pages_of_one_poll_is_announced_once(name: str, serve: Serve) -> None:
    platform, conn_id = serve(name, **PAGES_OF_TWO.get(name, {}))
    now = datetime.now(UTC)
    twice = Listed("listed-twice", now - timedelta(minutes=2))
    other = Listed("other", now - timedelta(minutes=1))
    platform.pages = finite([other, twice], [twice])
    poll = polled(watching(conn_id), Position.starting(now - timedelta(hours=1)))
    assert sorted(run_ids(poll)) == ["listed-twice", "other"]
    assert platform.listings() == 2


# --- the key echoed back ------------------------------------------------------------------------------

ECHOES = {
    "dashboardUrl": ("extend", "echoing-url", "https://dashboard.extend.ai/r?k={key}"),
    "run id": ("tableflow", "echoing-{key}", None),
    "run id of a run gone": ("extend", "gone-{key}", None),
}


@pytest.mark.parametrize("echo", ECHOES)
def test_an_echoed_key_reaches_neither_the_event_nor_the_log(
    echo: str,
    serve: Serve,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    name, run_id, url = ECHOES[echo]
    platform, conn_id = serve(name)
    platform.pages = finite([Listed(run_id, datetime.now(UTC), url=url)])
    platform.read_status = 404 if "gone" in echo else 200
    poll = polled(watching(conn_id), Position.starting(datetime.now(UTC) - timedelta(hours=1)))

    [(payload, position)] = poll.announced
    assert KEY in platform.hostile.requests[0]["headers"]["authorization"]  # the key was sent: the echo is real
    assert "Bearer ***" in json.dumps(payload)  # it came back, and was scrubbed
    logged = capsys.readouterr()
    for text in (json.dumps(payload), json.dumps(position.to_json()), caplog.text, logged.out, logged.err):
        assert KEY not in text
    if "gone" in echo:
        assert "for its task key failed" in caplog.text + logged.out + logged.err


def test_a_status_echoing_the_key_is_logged_scrubbed(
    serve: Serve,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A status no platform documents fails the poll; the log says so, without the key it echoes."""
    caplog.set_level(logging.DEBUG)
    platform, conn_id = serve("noxus")
    platform.pages = finite([Listed("echoing-status", datetime.now(UTC), status="{key}")])
    trigger = watching(conn_id, poll_interval=0.05)
    output: list[str] = []

    def said() -> str:
        output.append(capsys.readouterr().out)
        return "".join(output) + caplog.text

    async def two_failed_polls() -> None:
        announcements = trigger.announcements(Position.starting(datetime.now(UTC) - timedelta(hours=1)))
        watching_task = asyncio.ensure_future(anext(announcements))
        try:
            while said().count("failed for now") < 2:
                assert not watching_task.done(), "a run with an unknown status was announced"
                await asyncio.sleep(0.02)
        finally:
            watching_task.cancel()
            await asyncio.gather(watching_task, return_exceptions=True)
            await FlowRunsHook.close_async_clients()

    asyncio.run(asyncio.wait_for(two_failed_polls(), HANG_GUARD))
    assert "run status '***'" in said() and KEY not in said()  # Noxus takes the key as X-API-Key: echoed alone
