"""What a batch's wait carries from one execution of the task to the next (the deferral's state), and which
of the census's runs count: the documents expected, the run keys set aside, whether any is still under way."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from airflow_flowruns.batch.census import Census
from airflow_flowruns.batch.documents import BatchKeys, Document
from airflow_flowruns.batch.progress import is_live
from airflow_flowruns.waiting import OnReview

CARRIED = ("try_began", "deadline", "started", "since", "ignore", "refused")
"""What the deferral carries to ``execute_complete``: when the try began (which runs it counts in the metrics,
``airflow_flowruns.batch.counted``), its deadline, how many documents it started, the listing's lower bound, the
run keys set aside, and the documents the platform refused."""


def expected(documents: list[Document], state: Mapping[str, Any]) -> int:
    """The documents whose runs the wait counts: all but those the platform refused."""
    refused = set(state.get("refused") or ())
    return sum(1 for doc in documents if doc.key not in refused)


def ignored(state: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(state.get("ignore") or ())


def strays(census: Census, keys: BatchKeys, documents: list[Document], state: Mapping[str, Any]) -> list[str]:
    """Run keys to leave out of the counts: the ones set aside before, and the census's runs of documents that
    are not in the batch now."""
    return sorted(ignored(state) | set(census.strays({keys.run_key(doc.key) for doc in documents})))


def under_way(census: Census, keys: BatchKeys, documents: list[Document], on_review: OnReview) -> bool:
    """Whether a document now in the batch has a run still under way."""
    newest = (census.newest.get(keys.run_key(doc.key)) for doc in documents)
    return any(seen is not None and is_live(seen.state, on_review) for seen in newest)


def since(state: Mapping[str, Any]) -> datetime | None:
    """The earliest a run of the batch can have been created, as the deferral carried it."""
    return datetime.fromisoformat(state["since"]) if state.get("since") else None
