"""Answering the polls of many runs of one flow with one listing, in the triggerer."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

from airflow_flowruns.client.listing import PageWalk, run_pages
from airflow_flowruns.exceptions import FlowRunsError, FlowRunsResponseError, is_transient
from airflow_flowruns.platforms.base import FlowRun, Platform, RunQuery, RunsPage

log = logging.getLogger(__name__)

BATCH_MIN_RUNS = 20
"""Fewer polls than this in one turn of the event loop read their runs one by one: a page of the
listing costs more than a few single reads."""
MAX_PAGES_PER_BATCH = 20
"""A batch reads at most this many pages; runs not on them (older than every run on those pages) are
read one by one, so a flow with a long history never makes a poll walk it."""

ReadRun = Callable[[str], Awaitable[FlowRun]]
WalkRunPages = Callable[[PageWalk[RunsPage]], AsyncIterator[RunsPage]]
"""The client's driver of a walk through a run listing: any answer it cannot read is a ``FlowRunsError``."""


Waiting = dict[str, list[asyncio.Future[FlowRun]]]
"""Polls gathered in one turn of the event loop: the futures waiting on each run id."""


class PollGatherer(ABC):
    """Gathers the polls made in one turn of the event loop and answers them together in ``_answer``.

    The triggers due on a tick wake in the same turn (see ``PollClock``), so their polls arrive together.
    """

    def __init__(self) -> None:
        self._waiting: Waiting = {}
        self._answering: set[asyncio.Task[None]] = set()

    async def _gather(self, run_id: str) -> FlowRun:
        loop = asyncio.get_running_loop()
        if not self._waiting:
            loop.call_soon(self._answer_waiting)
        future: asyncio.Future[FlowRun] = loop.create_future()
        self._waiting.setdefault(run_id, []).append(future)
        return await future

    def _answer_waiting(self) -> None:
        waiting, self._waiting = self._waiting, {}
        task = asyncio.get_running_loop().create_task(self._answer_or_fail(waiting))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _answer_or_fail(self, waiting: Waiting) -> None:
        try:
            await self._answer(waiting)
        except BaseException as exc:  # a cancelled triggerer: no poll may wait forever
            for futures in waiting.values():
                settle(futures, error=exc)
            raise

    @abstractmethod
    async def _answer(self, waiting: Waiting) -> None:
        """Settle every future in ``waiting``."""


class ListingBatcher(PollGatherer):
    """Answers the polls made for runs of one flow in one turn of the event loop with one listing.

    The platform's poll listing (newest first, its largest pages) reads them all in one request per
    page instead of one per run. A run the listing did not show, or every run when the listing fails
    (refused, unreachable, or answered in a shape this provider cannot read), is read on its own, so a
    poll gets the same answer it would have got alone.
    """

    def __init__(self, platform: Platform, query: RunQuery, walk_pages: WalkRunPages, read_run: ReadRun) -> None:
        super().__init__()
        self._platform = platform
        self._query = query
        self._walk_pages = walk_pages
        self._read_run = read_run
        self._listing_refused = False
        # Where a run can only be read by walking the listing (StackAI), one walk for two polls already pays.
        self._min_runs = BATCH_MIN_RUNS if platform.get_run_call(query.flow_id, "any") is not None else 2

    async def get_run(self, run_id: str) -> FlowRun:
        return await self._gather(run_id)

    async def _answer(self, waiting: Waiting) -> None:
        if len(waiting) >= self._min_runs and not self._listing_refused:
            await self._answer_from_listing(waiting)
        await asyncio.gather(*(self._answer_alone(run_id, futures) for run_id, futures in waiting.items()))

    async def _answer_from_listing(self, waiting: Waiting) -> None:
        """Answer, and remove from ``waiting``, every run found on the first pages of the listing."""
        query = replace(self._query, run_ids=frozenset(waiting))
        walk = run_pages(self._platform, query, max_pages=MAX_PAGES_PER_BATCH)
        try:
            async for page in self._walk_pages(walk):
                for run in page.runs:
                    settle(waiting.pop(run.id, []), run=run)
                if not waiting:
                    break
        except FlowRunsError as exc:
            if refuses_listing(exc):
                # A key allowed to read runs but not to list them: stop trying, every poll reads its run.
                self._listing_refused = True
            log.warning(
                "Listing %s runs to answer %d polls failed (%s); reading those runs one by one.",
                self._platform.label,
                len(waiting),
                exc,
            )

    async def _answer_alone(self, run_id: str, futures: list[asyncio.Future[FlowRun]]) -> None:
        try:
            run = await self._read_run(run_id)
        except Exception as exc:
            settle(futures, error=exc)
        else:
            settle(futures, run=run)


def refuses_listing(exc: FlowRunsError) -> bool:
    """Whether a failed listing will fail again whatever is asked: a refusal that does not pass (a key
    not allowed to list), not one unreadable answer, which the next listing may not repeat."""
    return not is_transient(exc) and not isinstance(exc, FlowRunsResponseError)


def settle(
    futures: list[asyncio.Future[FlowRun]], run: FlowRun | None = None, error: BaseException | None = None
) -> None:
    """Answer every poll waiting on one run with the run or the error, skipping polls already given up."""
    for future in futures:
        if future.done():  # its trigger was cancelled while waiting
            continue
        if isinstance(error, asyncio.CancelledError):
            future.cancel()
        elif error is not None:
            future.set_exception(error)
        else:
            assert run is not None
            future.set_result(run)
