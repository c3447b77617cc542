"""The walk through a paged listing, written once and free of I/O: which call reads the next page, how many
pages one walk reads, and the parse of each page.

A walk is driven as httpx drives an auth flow: it yields the call that reads its next page, is sent that
call's decoded body, and answers with the parsed page. Each client has one driver
(``FlowRunsClient.walk_pages``, ``AsyncFlowRunsClient.walk_pages``) that performs the calls; whoever
reads the pages stops the walk early simply by reading no further, and no further page is asked for.
Every listing (runs for the hooks and the export, the pages that answer batched polls, the change feed,
the asset watcher's scan) is one of these walks, so a bound on a walk is kept in this one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from airflow_flowruns.client.errors import translated_errors
from airflow_flowruns.platforms.base import ApiCall, ChangesPage, Platform, RunQuery, RunsPage


class Page(Protocol):
    """A page of a listing (:class:`RunsPage`, :class:`ChangesPage`), which names the call for the next one."""

    @property
    def next_call(self) -> ApiCall | None: ...


P = TypeVar("P", bound=Page)


class PageWalk(Generic[P]):
    """One walk through a listing: iterating it gives the call for each next page, and ``send`` is given
    that call's decoded body and hands back the parsed page.

    The walk ends after the page that names no next one, or once it has read ``max_pages`` pages (None:
    no bound), whichever comes first. An answer of a shape this provider cannot read is the provider's
    own error naming the platform and call (:func:`translated_errors`).
    """

    def __init__(
        self,
        platform: Platform,
        first: ApiCall | None,
        parse: Callable[[Any, ApiCall], P],
        *,
        max_pages: int | None = None,
    ) -> None:
        self._platform = platform
        self._next = first
        self._parse = parse
        self._max_pages = max_pages
        self._sent: ApiCall | None = None
        self.pages = 0
        """Pages read so far."""

    def __iter__(self) -> PageWalk[P]:
        return self

    def __next__(self) -> ApiCall:
        """The call that reads the next page; the walk stops after the last page or at its bound."""
        call = self._next
        if call is None or (self._max_pages is not None and self.pages >= self._max_pages):
            raise StopIteration
        self._sent, self._next = call, None
        return call

    def send(self, body: Any) -> P:
        """The page in ``body``, the decoded answer to the call the walk gave last."""
        call = self._sent
        if call is None:
            raise RuntimeError("a page walk was sent a body before it gave the call that answers it")
        self._sent = None
        with translated_errors(self._platform, call):
            page = self._parse(body, call)
        self.pages += 1
        self._next = page.next_call
        return page


def run_pages(
    platform: Platform, query: RunQuery, first: ApiCall | None = None, *, max_pages: int | None = None
) -> PageWalk[RunsPage]:
    """The walk through the runs ``query`` lists, unfiltered (``query.matches`` is the reader's to apply),
    from ``first`` where the reader asks the listing in another order than the platform's own call does."""
    return PageWalk(
        platform,
        platform.list_runs_call(query) if first is None else first,
        lambda body, call: platform.parse_runs_page(body, call, query),
        max_pages=max_pages,
    )


def change_pages(platform: Platform, first: ApiCall, *, max_pages: int | None = None) -> PageWalk[ChangesPage]:
    """The walk through the platform's change feed (``Platform.change_feed_call``), newest change first."""
    return PageWalk(platform, first, platform.parse_changes, max_pages=max_pages)
