"""Which documents a batch task started, kept across tries in its task state store (Airflow 3.3+).

The ledger is pages of at most ``PAGE_DOCUMENTS`` documents in the order they were started, each written
twice: before its starts, listing the documents as ``starting``; after them, with each document's run id
(empty where the start call names no run: Extend's batch answer is a batch id). A page left ``starting`` is a
worker that died between the two writes: its documents are looked up on the platform by run key, as every
document is where no state store exists. A later page naming a document again (a failed run re-run) wins.

Two writes per page, not per document: ten thousand documents are two hundred writes, each small enough
for the store's default value limit (64 KB), and a resume reads a hundred pages rather than listing the flow's
runs to learn which documents were started.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

LEDGER_KEY = "flowruns_batch"
"""State store key of the ledger's header (``{"pages": n}``); page ``i`` is under ``flowruns_batch/i``.
Renaming it breaks retries in flight."""
PAGE_DOCUMENTS = 100


class StateStore(Protocol):
    """What the ledger uses of Airflow's ``task_state_store``."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...


@dataclass
class LedgerView:
    """What the ledger knows: documents started (key to run id, ``""`` where unknown) and documents a dead
    worker noted as starting without confirming them."""

    started: dict[str, str] = field(default_factory=dict)
    unsure: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)
    """Documents the platform refused in the current try (their file or metadata), with its reason."""
    this_try: dict[str, str] = field(default_factory=dict)
    """Documents the current try started, with their run ids as in ``started``: the runs it counts in the
    metrics (``airflow_flowruns.batch.counted``)."""


class Ledger:
    """The ledger of one task instance; without a state store it keeps nothing, and ``kept`` says so."""

    def __init__(self, store: StateStore | None, try_number: int = 1) -> None:
        self._store = store
        self._try = try_number
        self._pages = 0

    @property
    def kept(self) -> bool:
        return self._store is not None

    def load(self) -> LedgerView:
        view = LedgerView()
        if self._store is None:
            return view
        header = self._store.get(LEDGER_KEY)
        self._pages = header.get("pages", 0) if isinstance(header, dict) else 0
        for index in range(self._pages):
            page = self._store.get(f"{LEDGER_KEY}/{index}")
            if not isinstance(page, dict):
                continue
            runs = page.get("runs")
            if isinstance(runs, dict):
                for key, run_id in runs.items():
                    view.started[key] = str(run_id or "")
                    view.unsure.discard(key)
                if page.get("try") == self._try:  # a new try sends refused documents again
                    view.refused.update(page.get("refused") or {})
                    view.this_try.update((key, str(run_id or "")) for key, run_id in runs.items())
            else:
                view.unsure.update(str(key) for key in page.get("starting") or ())
        return view

    def note(self, document_keys: Iterable[str]) -> list[tuple[int, list[str]]]:
        """Before the starts: new pages listing ``document_keys`` as starting; the pages, for ``confirm``."""
        keys = list(document_keys)
        pages = []
        for first in range(0, len(keys), PAGE_DOCUMENTS):
            page = (self._pages, keys[first : first + PAGE_DOCUMENTS])
            self._pages += 1
            self._set(f"{LEDGER_KEY}/{page[0]}", {"starting": page[1]})
            pages.append(page)
        self._set(LEDGER_KEY, {"pages": self._pages})
        return pages

    def confirm(self, pages: list[tuple[int, list[str]]], runs: Mapping[str, str], refused: Mapping[str, str]) -> None:
        """After the starts: each noted page with the run ids of its documents that started, and the reasons of
        those the platform refused (a start that failed otherwise leaves its document out: never started)."""
        for index, keys in pages:
            page: dict[str, Any] = {"runs": {key: runs[key] for key in keys if key in runs}, "try": self._try}
            page["refused"] = {key: refused[key] for key in keys if key in refused}
            self._set(f"{LEDGER_KEY}/{index}", page)

    def _set(self, key: str, value: Any) -> None:
        if self._store is not None:
            self._store.set(key, value)
