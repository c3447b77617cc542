"""The walk through a paged listing, written once and free of I/O: which call reads the next page, how many
pages one walk reads, and the parse of each page.

A walk is driven as httpx drives an auth flow: it yields the call that reads its next page, is sent that
call's decoded body, and answers with the parsed page. Each client has one driver
(``FlowRunsClient.walk_pages``, ``AsyncFlowRunsClient.walk_pages``) that performs the calls; whoever
reads the pages stops the walk early simply by reading no further, and no further page is asked for.
Every listing (runs for the hooks and the export, the pages that answer batched polls, the change feed,
the asset watcher's scan) is one of these walks, so a bound on a walk is kept in this one place: a
platform whose listing never ends (a page token or offset it already gave, a page count in the billions,
pages that are always full) ends the walk at its ``WalkBounds``, with a warning in the log, and the
reader learns from ``PageWalk.cut_short`` that it did not see the whole listing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from airflow_flowruns.client.errors import translated_errors
from airflow_flowruns.exceptions import FlowRunsListingError
from airflow_flowruns.platforms.base import ApiCall, ChangesPage, Platform, RunQuery, RunsPage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WalkBounds:
    """How far one walk goes at most: pages read, items on them, and seconds since its first call.

    Seconds are checked before each next page, so a walk ends at most one request's ``timeout`` after them.
    """

    pages: int
    items: int
    seconds: float


LISTING_BOUNDS = WalkBounds(pages=200, items=50_000, seconds=300.0)
"""The bounds of every walk that asks for none of its own: 200 pages are 20,000 runs at the platforms'
usual page size of 100, and five minutes is ten times the slowest genuine listing seen; what a real
listing holds fits well inside, and a listing that never ends stops within seconds at hundreds of pages a
second, or at the deadline when it answers slowly."""


class Page(Protocol):
    """A page of a listing (``RunsPage``, ``ChangesPage``), which names the call for the next one."""

    @property
    def next_call(self) -> ApiCall | None: ...

    def __len__(self) -> int: ...


P = TypeVar("P", bound=Page)


class PageWalk(Generic[P]):
    """One walk through a listing: iterating it gives the call for each next page, and ``send`` is given
    that call's decoded body and hands back the parsed page.

    The walk ends after the page that names no next one, or at its ``bounds`` (and at ``max_pages``, for a
    reader that wants only the first pages), or when a page names a call the walk already made: a token or
    offset the platform gave before, which would walk the same pages forever. Only a stop short of the
    last page that the reader did not ask for with ``max_pages`` is ``cut_short`` and logged. An
    answer of a shape this provider cannot read is the provider's own error naming the platform and call
    (``translated_errors``).
    """

    def __init__(
        self,
        platform: Platform,
        first: ApiCall | None,
        parse: Callable[[Any, ApiCall], P],
        *,
        max_pages: int | None = None,
        bounds: WalkBounds = LISTING_BOUNDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._platform = platform
        self._next = first
        self._parse = parse
        self._max_pages = max_pages
        self._bounds = bounds
        self._clock = clock
        self._started: float | None = None
        self._made: set[str] = set()
        self._sent: ApiCall | None = None
        self._out_of_time = f"{bounds.seconds:g} s spent"
        self._not_made: str | None = None
        """The name of the call a walk ``cut_short`` did not make."""
        self.pages = 0
        """Pages read so far."""
        self.items = 0
        """Items on the pages read so far."""
        self.cut_short: str | None = None
        """Why the walk ended before the listing's last page when the listing, not the reader, made it
        end (None: it read to the end, or to the reader's ``max_pages``)."""

    def __iter__(self) -> PageWalk[P]:
        return self

    def __next__(self) -> ApiCall:
        """The call that reads the next page; the walk stops after the last page or at a bound."""
        call = self._next
        if call is None or (self._max_pages is not None and self.pages >= self._max_pages):
            raise StopIteration
        identity = _identity(call)
        reason = self._bound_reached(identity)
        if reason is not None:
            self._stop(call, reason)
            raise StopIteration
        if self._started is None:
            self._started = self._clock()
        self._made.add(identity)
        self._sent, self._next = call, None
        return call

    def _bound_reached(self, identity: str) -> str | None:
        bounds = self._bounds
        if identity in self._made:
            return "the platform named a page it had already given (a repeated page token or offset)"
        if self.pages >= bounds.pages:
            return f"{bounds.pages} pages read"
        if self.items >= bounds.items:
            return f"{bounds.items} items read"
        if self._started is not None and self._clock() - self._started >= bounds.seconds:
            return self._out_of_time
        return None

    def _stop(self, call: ApiCall, reason: str) -> None:
        self.cut_short = reason
        self._not_made = call.name
        self._next = None
        log.warning(
            "%s listing %r stopped before its last page: %s, after %d pages and %d items. "
            "What it did not read is not taken for absent.",
            self._platform.label,
            call.name,
            reason,
            self.pages,
            self.items,
        )

    def raise_if_cut_short(self) -> None:
        """The provider's error when the walk was ``cut_short``, for a reader that takes what it read for
        the whole listing (every run of a query, or a run's absence) and must not conclude from a part.

        It is retryable when the walk ran out of time, which a slow platform may not repeat."""
        if self._not_made is not None and self.cut_short is not None:
            raise FlowRunsListingError(
                platform=self._platform.label,
                call=self._not_made,
                reason=self.cut_short,
                retryable=self.cut_short == self._out_of_time,
            )

    def send(self, body: Any) -> P:
        """The page in ``body``, the decoded answer to the call the walk gave last."""
        call = self._sent
        if call is None:
            raise RuntimeError("a page walk was sent a body before it gave the call that answers it")
        self._sent = None
        with translated_errors(self._platform, call):
            page = self._parse(body, call)
        self.pages += 1
        self.items += len(page)
        self._next = page.next_call
        return page


def _identity(call: ApiCall) -> str:
    """What tells two calls for a page apart: the path, the query and the body (a token or an offset)."""
    return json.dumps([call.method, call.path, call.params, call.json, call.data], sort_keys=True, default=str)


def run_pages(
    platform: Platform,
    query: RunQuery,
    first: ApiCall | None = None,
    *,
    max_pages: int | None = None,
    bounds: WalkBounds = LISTING_BOUNDS,
) -> PageWalk[RunsPage]:
    """The walk through the runs ``query`` lists, unfiltered (``query.matches`` is the reader's to apply),
    from ``first`` where the reader asks the listing in another order than the platform's own call does."""
    return PageWalk(
        platform,
        platform.list_runs_call(query) if first is None else first,
        lambda body, call: platform.parse_runs_page(body, call, query),
        max_pages=max_pages,
        bounds=bounds,
    )


def change_pages(
    platform: Platform, first: ApiCall, *, max_pages: int | None = None, bounds: WalkBounds = LISTING_BOUNDS
) -> PageWalk[ChangesPage]:
    """The walk through the platform's change feed (``Platform.change_feed_call``), newest change first."""
    return PageWalk(platform, first, platform.parse_changes, max_pages=max_pages, bounds=bounds)
