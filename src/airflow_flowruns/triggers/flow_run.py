"""The deferred wait: polls one run from the triggerer until it settles or its deadline passes."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_flowruns.exceptions import FlowRunsError, is_transient
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms import FlowRun
from airflow_flowruns.waiting import OnReview, is_settled


class FlowRunTrigger(BaseTrigger):
    """Yields exactly one event: ``settled``, ``timeout`` or ``error``.

    It serializes plain values only; credentials are looked up from ``conn_id`` inside the triggerer.
    ``deadline`` is absolute (unix seconds), so a trigger re-created after a triggerer restart or a
    move to another triggerer keeps the task's original deadline. ``cleanup()`` is not overridden:
    a restart must never cancel the remote run; only ``on_kill()`` (a user acting on the task) does.
    """

    def __init__(
        self,
        *,
        conn_id: str,
        platform: str,
        flow_id: str | None,
        run_id: str,
        deadline: float,
        poll_interval: float,
        on_review: str = OnReview.SUCCEED.value,
    ) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.platform = platform
        self.flow_id = flow_id
        self.run_id = run_id
        self.deadline = deadline
        self.poll_interval = poll_interval
        self.on_review = OnReview.parse(on_review)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "platform": self.platform,
                "flow_id": self.flow_id,
                "run_id": self.run_id,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
                "on_review": self.on_review.value,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        last: FlowRun | None = None
        # The task checked the run just before deferring; a random first wait spreads the polls of
        # triggers that start together (a backfill, a triggerer restart) across the interval.
        await asyncio.sleep(min(random.uniform(0, self.poll_interval), max(0.0, self.deadline - time.time())))
        while True:
            try:
                last = await self.poll()
            except FlowRunsError as exc:
                if not is_transient(exc):
                    yield self._event("error", message=str(exc))
                    return
                self.log.warning(
                    "Polling %s run %s failed for now, will poll again: %s", self.platform, self.run_id, exc
                )
            if last is not None and is_settled(last, self.on_review):
                yield self._event("settled", run=last.to_xcom())
                return
            remaining = self.deadline - time.time()
            if remaining <= 0:
                yield self._event("timeout", run=last.to_xcom() if last else None)
                return
            await asyncio.sleep(min(self.poll_interval, remaining))

    async def poll(self) -> FlowRun:
        """Read the run once, on the client every trigger on this connection shares."""
        client = await FlowRunsHook.get_async_client(self.conn_id)
        return await client.get_run(self.flow_id, self.run_id)

    def _event(self, outcome: str, **payload: Any) -> TriggerEvent:
        return TriggerEvent({"outcome": outcome, "run_id": self.run_id, "flow_id": self.flow_id, **payload})

    async def on_kill(self) -> None:
        """A user marked the task failed or cleared it: cancel the remote run where the platform can."""
        client = await FlowRunsHook.get_async_client(self.conn_id)
        call = client.platform.cancel_call(self.flow_id, self.run_id)
        if call is None:
            self.log.warning(
                "%s has no cancel call: run %s keeps going on the platform side.",
                client.platform.label,
                self.run_id,
            )
            return
        await client.call(call)
        self.log.info("Asked %s to cancel run %s.", client.platform.label, self.run_id)
