"""The deferred wait: polls one run from the triggerer until it settles or its deadline passes."""

from __future__ import annotations

import asyncio
import math
import random
import time
import weakref
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_flowruns import metrics
from airflow_flowruns.exceptions import FlowRunsError, is_transient
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms import PLATFORMS
from airflow_flowruns.platforms.base import FlowRun
from airflow_flowruns.waiting import OnReview, WaitProgress, check_poll_interval, is_settled, spoken

if TYPE_CHECKING:
    from airflow_flowruns.client.async_client import AsyncFlowRunsClient

TICKS_PER_INTERVAL = 10
DEFERRED = "deferred"
"""Airflow's task instance state while its trigger runs."""


class PollClock:
    """Wakes every trigger of one event loop whose next poll falls in the same tick at once.

    Each wake-up of an event loop is a trip through its selector, and that trip, not the Python code
    around it, is most of what an idle trigger costs: thousands of triggers sleeping to their own
    instants make one trip per poll. Waking on tick boundaries they share makes one trip per tick,
    sends that tick's polls out together over connections already open, and lets the client answer
    the polls of one flow with one listing (see ``AsyncFlowRunsClient.get_run``).
    """

    _clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, PollClock] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ticks: dict[tuple[float, int], asyncio.Event] = {}

    @classmethod
    def of_running_loop(cls) -> PollClock:
        loop = asyncio.get_running_loop()
        clock = cls._clocks.get(loop)
        if clock is None:
            clock = cls._clocks[loop] = cls(loop)
        return clock

    @staticmethod
    def _tick_index(when: float, tick: float) -> int:
        """Which tick boundary is the first at or after ``when``; the tolerance absorbs float error in sums
        of intervals, so ``due + interval`` stays on the boundary it is meant to be on."""
        return math.ceil(when / tick - 1e-6)

    def next_tick(self, when: float, tick: float) -> float:
        """The first tick boundary at or after ``when`` (loop time), shared by every caller with this ``tick``."""
        return self._tick_index(when, tick) * tick

    async def sleep_until(self, when: float, tick: float) -> None:
        """Sleep until ``next_tick(when, tick)``, waking with every other trigger due on that tick."""
        key = (tick, self._tick_index(when, tick))
        due = self._ticks.get(key)
        if due is None:
            due = self._ticks[key] = asyncio.Event()
            self._loop.call_at(key[1] * tick, self._fire, key)
        await due.wait()

    def _fire(self, key: tuple[float, int]) -> None:
        self._ticks.pop(key).set()


class FlowRunTrigger(BaseTrigger):
    """Yields exactly one event: ``settled``, ``timeout`` or ``error``, whatever the platform answers.

    It serializes plain values only; credentials are looked up from ``conn_id`` inside the triggerer.
    ``deadline`` is absolute (unix seconds), so a trigger re-created after a triggerer restart or a
    move to another triggerer keeps the task's original deadline. ``cleanup()`` is not overridden:
    a restart must never cancel the remote run; only ``on_kill()`` (a user acting on the task) does.
    ``poll_interval`` is held to ``[flowruns] min_poll_interval`` as the operator's and sensor's are, so a
    custom operator deferring to this trigger is refused a faster one when it defers.
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
        on_review: str = "succeed",
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # BaseTrigger.__init__ is unannotated
        self.conn_id = conn_id
        self.platform = platform
        self.flow_id = flow_id
        self.run_id = run_id
        self.deadline = deadline
        self.poll_interval = check_poll_interval(poll_interval)
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
        """Poll at a fixed rate on the loop's shared ticks until the run settles or the deadline passes.

        A tick is a tenth of the poll interval. Where the platform answers many polls with one listing
        (``Platform.poll_listing``), every trigger of a flow polls on the same ticks, one interval apart, so
        one listing per interval answers them all. Elsewhere the first poll is on a random tick within one
        interval, so triggers that start together (a backfill, a triggerer restart) spread their requests;
        the task checked the run just before deferring. Later polls follow one interval apart whatever a
        poll took, so a change is seen within the interval plus the time to answer the poll. The task's log gets
        each state once, when first seen, and a heartbeat while none changes (``WaitProgress``).
        """
        clock = PollClock.of_running_loop()
        tick = self.poll_interval / TICKS_PER_INTERVAL
        loop = asyncio.get_running_loop()
        if self.polls_by_listing():
            due = clock.next_tick(loop.time(), self.poll_interval)
        else:
            due = clock.next_tick(loop.time() + random.uniform(0, self.poll_interval), tick)
        last: FlowRun | None = None
        progress = WaitProgress(self.log)
        self.log.info(
            "Following %s run %s from the triggerer: a check every %s until %s.",
            self.platform,
            self.run_id,
            spoken(self.poll_interval),
            datetime.fromtimestamp(self.deadline, UTC).isoformat(timespec="seconds"),
        )
        while True:
            remaining = self.deadline - time.time()
            if due - loop.time() < remaining:
                await clock.sleep_until(due, tick)
            else:
                await asyncio.sleep(max(0.0, remaining))
            polled = await self._poll_once()
            if isinstance(polled, TriggerEvent):
                yield polled
                return
            last = polled or last
            if last is not None and is_settled(last, self.on_review):
                metrics.settled(last, self.conn_id)
                progress.seen(last, next_check=None)
                yield self._event("settled", run=last.to_xcom())
                return
            if self.deadline <= time.time():
                seen = f"still {last.status}" if last else "never read"
                self.log.info("The deadline passed with %s run %s %s.", self.platform, self.run_id, seen)
                yield self._event("timeout", run=last.to_xcom() if last else None)
                return
            # One interval on; a poll that took longer skips whole intervals, keeping the trigger on its ticks.
            due += self.poll_interval * max(1, math.ceil((loop.time() - due) / self.poll_interval))
            if last is not None:
                progress.seen(last, next_check=min(due - loop.time(), self.deadline - time.time()))

    async def _poll_once(self) -> FlowRun | TriggerEvent | None:
        """One poll: the run; None when it failed for now (a transient error, no answer by the deadline); the
        ``error`` event that ends the trigger when it failed for good."""
        try:
            return await self.poll()
        except TimeoutError:
            self.log.warning("Polling %s run %s got no answer before the deadline.", self.platform, self.run_id)
        except FlowRunsError as exc:
            if not is_transient(exc):
                return self._event("error", message=str(exc))
            self.log.warning("Polling %s run %s failed for now, will poll again: %s", self.platform, self.run_id, exc)
        except Exception as exc:  # whatever a poll raises, the task hears of it through an event
            self.log.exception("Polling %s run %s failed unexpectedly", self.platform, self.run_id)
            message = (
                f"Polling {self.platform} run {self.run_id!r} failed: {type(exc).__name__} (see the triggerer log)."
            )
            return self._event("error", message=message)
        return None

    def polls_by_listing(self) -> bool:
        """Whether ``poll()`` is answered by the shared client's listing (``Platform.poll_listing``) or change
        feed (``Platform.change_feed_call``): then triggers poll in step, so one listing or scan answers them
        all; otherwise they spread out."""
        platform = PLATFORMS.get(self.platform)
        if platform is None:
            return False
        return platform.poll_listing(self.flow_id) is not None or platform.change_feed_call() is not None

    async def poll(self) -> FlowRun:
        """Read the run once, on the client every trigger on this connection shares.

        However the platform answers (a hang, a trickle, a long ``Retry-After``), the poll ends by the
        deadline, or one request ``timeout`` after it for the poll made at the deadline itself, so the
        trigger still fires its ``timeout`` event.
        """
        client = await FlowRunsHook.get_async_client(self.conn_id)
        async with asyncio.timeout(max(self.deadline - time.time(), client.options.timeout)):
            return await self.fetch_run(client)

    async def fetch_run(self, client: AsyncFlowRunsClient) -> FlowRun:
        """What one poll asks the shared client: the run, answered by the platform's listing or change feed
        where it has one (``polls_by_listing``), else by a read of its own."""
        return await client.get_run(self.flow_id, self.run_id)

    def _event(self, outcome: str, **payload: Any) -> TriggerEvent:
        return TriggerEvent(
            {"outcome": outcome, "run_id": self.run_id, "flow_id": self.flow_id, "deadline": self.deadline, **payload}
        )

    async def on_kill(self) -> None:
        """A user marked the task failed or cleared it: cancel the remote run where the platform can.

        Airflow also cancels a trigger "by user action" when another triggerer has taken it over (a
        triggerer whose heartbeat came late hands its triggers on, then cancels its own copies). The
        task is still deferred then and its run has a new follower, so the run is left alone.
        """
        if await self._task_still_deferred():
            self.log.info(
                "The task is still deferred (its trigger moved to another triggerer): run %s goes on.", self.run_id
            )
            return
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

    async def _task_still_deferred(self) -> bool:
        """Ask Airflow for the task's state; a trigger with no task, or a state it cannot read, is not deferred."""
        ti = self.task_instance
        if ti is None:
            return False
        try:
            from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

            states = await asyncio.to_thread(
                RuntimeTaskInstance.get_task_states,
                dag_id=ti.dag_id,
                task_ids=[ti.task_id],
                run_ids=[ti.run_id],
                map_index=ti.map_index,
            )
        except Exception:
            self.log.warning(
                "Could not read the state of task %s; cancelling its run as asked.", ti.task_id, exc_info=True
            )
            return False
        key = ti.task_id if ti.map_index is None or ti.map_index < 0 else f"{ti.task_id}_{ti.map_index}"
        return bool(states.get(ti.run_id, {}).get(key) == DEFERRED)
