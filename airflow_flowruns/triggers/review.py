"""The deferred review: follows a run in review and its Required Action until one of them decides.

Airflow serves reads and answers of a Required Action to the triggerer only, so the trigger does what follows the
item's creation: below Airflow 3.3 it reads the answer (on 3.3 the API server resumes the task on an answer by
itself), and when the run settles in the vendor's app or the deadline passes it closes the item with a note. A
person's answer recorded before that close is the decision (Airflow takes one answer per item).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from uuid import UUID

from airflow.triggers.base import TriggerEvent

from airflow_flowruns import metrics
from airflow_flowruns.exceptions import FlowRunsError, is_transient
from airflow_flowruns.platforms import facts_of
from airflow_flowruns.platforms.base import FlowRun
from airflow_flowruns.review.items import aclose_item, aread_answer
from airflow_flowruns.triggers.flow_run import FlowRunTrigger
from airflow_flowruns.waiting import OnReview, WaitProgress

ANSWER_POLL_SECONDS = 5.0
"""How often the Required Action is read: an Airflow-internal call, as cheap as the standard HITL trigger's."""
DEADLINE_NOTE = "The task's deadline passed before the review ended."


class FlowRunReviewTrigger(FlowRunTrigger):
    """Yields one event: ``answered`` (a person answered the Required Action), ``settled`` (the run reached a
    final state in the vendor's app), ``timeout`` or ``error``; the last three after closing the item.

    ``follow_run`` is off when the run already finished and only an answer is awaited (the confidence gate);
    ``watch_answer`` is off where Airflow resumes the task itself on an answer; ``close_with`` is the option the
    item is closed with, None when a person already answered it (with "wait").
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
        ti_id: str,
        watch_answer: bool,
        follow_run: bool = True,
        close_with: str | None = None,
    ) -> None:
        super().__init__(
            conn_id=conn_id,
            platform=platform,
            flow_id=flow_id,
            run_id=run_id,
            deadline=deadline,
            poll_interval=poll_interval,
            on_review=OnReview.WAIT.value,
        )
        self.ti_id = ti_id
        self.watch_answer = watch_answer
        self.follow_run = follow_run
        self.close_with = close_with
        self._unread = close_with is not None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        path, kwargs = super().serialize()
        del kwargs["on_review"]
        mine = {"ti_id": self.ti_id, "watch_answer": self.watch_answer, "follow_run": self.follow_run}
        return path, {**kwargs, **mine, "close_with": self.close_with}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        next_poll = time.time()
        progress = WaitProgress(self.log)
        try:
            while True:
                event = await self._check(poll_run=self.follow_run and time.time() >= next_poll, progress=progress)
                if event is not None:
                    yield event
                    return
                if self.deadline <= time.time():
                    yield await self._closing(self._event("timeout"), DEADLINE_NOTE)
                    return
                if time.time() >= next_poll:
                    next_poll = time.time() + self.poll_interval
                step = ANSWER_POLL_SECONDS if self.watch_answer else next_poll - time.time()
                pause = max(0.0, min(step, next_poll - time.time(), self.deadline - time.time()))
                progress.heartbeat(self._awaiting(), next_check=pause)
                await asyncio.sleep(pause)
        except Exception as exc:  # whatever a check raises, the task hears of it through an event
            self.log.exception("Following %s run %s in review failed", self.platform, self.run_id)
            failed = self._event("error", message=f"Following run {self.run_id!r} in review failed: {exc}")
            yield await self._closing(failed, "The task failed while it waited; see its log.", best_effort=True)

    async def _check(self, *, poll_run: bool, progress: WaitProgress) -> TriggerEvent | None:
        if self.watch_answer or self._unread:  # once even where Airflow resumes the task on an answer: one given
            self._unread = False  # before the task deferred resumed nothing
            answer = await aread_answer(UUID(self.ti_id))
            if answer is not None and answer.get("responded_by_user") is not None:
                return self._answered(answer)
        if not poll_run:
            return None
        try:
            run = await self.poll()
        except TimeoutError:
            return None
        except FlowRunsError as exc:
            if not is_transient(exc):
                return await self._closing(self._event("error", message=str(exc)), f"The task failed: {exc}")
            self.log.warning("Polling %s run %s failed for now, will poll again: %s", self.platform, self.run_id, exc)
            return None
        if not run.state.is_final:
            progress.seen(run, next_check=self.poll_interval)
            return None
        progress.seen(run, next_check=None)
        metrics.settled(run, self.conn_id)
        return await self._closing(self._event("settled", run=run.to_xcom()), _decided_note(run))

    async def _closing(self, event: TriggerEvent, note: str, *, best_effort: bool = False) -> TriggerEvent:
        """``event`` once the item is closed with ``note``; a person's answer instead if one came first."""
        if self.close_with is None:
            return event
        try:
            answer = await aclose_item(UUID(self.ti_id), self.close_with, note)
        except Exception:
            if not best_effort:
                raise
            self.log.warning("Could not close the Required Action of run %s.", self.run_id, exc_info=True)
            return event
        if answer is not None and answer.get("responded_by_user") is not None:
            return self._answered(answer)
        return event

    async def on_kill(self) -> None:
        """Cancel the run as the run's trigger does when a user marks the task failed or clears it, but not on a
        person's answer to the open Required Action: Airflow 3.3 resumes the task on an answer by cancelling this
        trigger, and an answer in Airflow leaves the run to the vendor's app."""
        if self.close_with is not None and await aread_answer(UUID(self.ti_id)) is not None:
            self.log.info("The Required Action was answered: run %s is left as it is.", self.run_id)
            return
        await super().on_kill()

    def _awaiting(self) -> str:
        """What the wait is for, in its heartbeat."""
        elsewhere = f" or the end of its review in {facts_of(self.platform).label}" if self.follow_run else ""
        return f"{self.platform} run {self.run_id} awaits an answer to its Required Action in Airflow{elsewhere}"

    def _answered(self, answer: dict[str, Any]) -> TriggerEvent:
        at = answer.get("responded_at")
        return self._event(
            "answered", answer={**answer, "responded_at": at.isoformat() if isinstance(at, datetime) else at}
        )


def _decided_note(run: FlowRun) -> str:
    return f"Decided in {facts_of(run.platform).label}: the run ended {run.state.value} ({run.status})."
