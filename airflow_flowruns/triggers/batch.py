"""The deferred wait of a batch: one trigger follows every run of a shard through the flow's listing.

Each poll takes a census (``airflow_flowruns.batch.census``): one walk over the runs created since the batch
began, page by page on the connection's shared client, counting the newest run of each of the shard's
documents. Between polls the task log gets a progress line at least every ``PROGRESS_EVERY_SECONDS``. The
event carries counts only, never one entry per document: the worker takes its own census to report.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_flowruns.batch.census import atake_census
from airflow_flowruns.batch.documents import BatchKeys
from airflow_flowruns.batch.progress import PROGRESS_EVERY_SECONDS, Outcome, ProgressLog, verdict
from airflow_flowruns.exceptions import FlowRunsError, is_transient
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.waiting import OnReview, check_poll_interval


class FlowRunBatchTrigger(BaseTrigger):
    """Yields exactly one event: ``settled``, ``room``, ``timeout`` or ``error``, with the shard's counts.

    ``pending`` documents are not started yet; with ``max_in_flight`` the trigger fires ``room`` once enough
    runs settled to start more. ``since`` (ISO 8601) bounds the listing: the batch's runs are not older.
    ``ignore``: run keys of documents no longer in the batch (renamed or removed between tries), not counted.
    ``manifest``: where the task writes the batch manifest once the wait ends, named in the event.
    """

    def __init__(
        self,
        *,
        conn_id: str,
        flow_id: str,
        batch_key: str,
        shard: int,
        shard_count: int,
        since: str | None,
        documents: int,
        pending: int,
        deadline: float,
        poll_interval: float,
        on_review: str = "succeed",
        max_in_flight: int | None = None,
        ignore: list[str] | None = None,
        manifest: str | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # BaseTrigger.__init__ is unannotated
        self.conn_id = conn_id
        self.flow_id = flow_id
        self.keys = BatchKeys(batch_key, shard, shard_count)
        self.since = since
        self.documents = documents
        self.pending = pending
        self.deadline = deadline
        self.poll_interval = check_poll_interval(poll_interval)
        self.on_review = OnReview.parse(on_review)
        self.max_in_flight = max_in_flight
        self.ignore = list(ignore or [])
        self.manifest = manifest

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "flow_id": self.flow_id,
                "batch_key": self.keys.batch_key,
                "shard": self.keys.shard,
                "shard_count": self.keys.shard_count,
                "since": self.since,
                "documents": self.documents,
                "pending": self.pending,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
                "on_review": self.on_review.value,
                "max_in_flight": self.max_in_flight,
                "ignore": self.ignore,
                "manifest": self.manifest,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        progress = ProgressLog(self.documents, self.on_review)
        counts: Counter[str] = Counter()
        next_poll = 0.0
        while True:
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + self.poll_interval
                try:
                    counts = await self._count()
                except TimeoutError:
                    self.log.warning("Counting the batch's runs took longer than a poll interval; counting again.")
                except FlowRunsError as exc:
                    if not is_transient(exc):
                        yield self._event("error", counts, message=str(exc))
                        return
                    self.log.warning("Counting the batch's runs failed for now, will count again: %s", exc)
                except Exception as exc:  # whatever a poll raises, the task hears of it through an event
                    self.log.exception("Counting the batch's runs failed unexpectedly")
                    message = f"Following the batch failed: {type(exc).__name__} (see the triggerer log)."
                    yield self._event("error", counts, message=message)
                    return
                outcome = verdict(counts, self.documents, self.pending, self.max_in_flight, self.on_review)
                if outcome is None and self.deadline <= time.time():
                    outcome = Outcome.TIMEOUT
                if outcome is not None:
                    yield self._event(outcome.value, counts)
                    return
            client = await FlowRunsHook.get_async_client(self.conn_id)
            self.log.info("%s", progress.line(counts, client.limited_answers))
            wake = min(next_poll, time.monotonic() + PROGRESS_EVERY_SECONDS)
            await asyncio.sleep(max(0.0, min(wake - time.monotonic(), self.deadline - time.time())))

    async def _count(self) -> Counter[str]:
        hook = FlowRunsHook(self.conn_id)
        since = datetime.fromisoformat(self.since) if self.since else None
        async with asyncio.timeout(max(self.deadline - time.time(), 0) + self.poll_interval):
            census = await atake_census(hook, self.flow_id, self.keys, since, frozenset(self.ignore))
        return census.counts()

    def _event(self, outcome: str, counts: Counter[str], **payload: Any) -> TriggerEvent:
        return TriggerEvent(
            {
                "outcome": outcome,
                "counts": dict(counts),
                "documents": self.documents,
                "manifest": self.manifest,
                **payload,
            }
        )
