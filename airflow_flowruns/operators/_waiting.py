"""The wait shared by the operator and the sensor: in the worker, or deferred to the triggerer."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_flowruns.exceptions import FlowRunsError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.operators._review import FlowRunReviewMixin
from airflow_flowruns.platforms.base import FlowRun
from airflow_flowruns.triggers.flow_run import FlowRunTrigger
from airflow_flowruns.version_compat import AIRFLOW_V_3_3_PLUS, check_can_defer, missing_feature
from airflow_flowruns.waiting import OnReview, closing_line, is_settled, timed_out

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

log = logging.getLogger(__name__)


def check_can_wait(hook: FlowRunsHook, *, deferrable: bool, on_review: OnReview) -> None:
    """Before anything starts: a task that will defer (to wait, or for a review in Airflow) on an Airflow that
    cannot store its trigger fails now, naming the fix. A synchronous platform's run never defers."""
    if not hook.platform.synchronous and (deferrable or on_review is OnReview.AIRFLOW):
        check_can_defer()


class FlowRunWaitMixin(FlowRunReviewMixin):
    """Waits for a run until it settles and turns the outcome into the task's result or failure.

    ``_run`` is the run as last seen; the settled run once the task has its outcome (read by lineage).
    """

    cancel_on_timeout: bool
    timeout: float

    def wait_for_run(self, context: Context, hook: FlowRunsHook, run: FlowRun, deadline: float) -> dict[str, Any]:
        if is_settled(run, self.on_review):
            return self.settle(context, run, deadline)
        if self.deferrable:
            if not AIRFLOW_V_3_3_PLUS:
                missing_feature("Cancelling the run when its deferred task is marked failed or cleared", "3.3")
            self.defer(
                trigger=FlowRunTrigger(
                    conn_id=self.hook.flowruns_conn_id,
                    platform=run.platform,
                    flow_id=run.flow_id,
                    run_id=run.id,
                    deadline=deadline,
                    poll_interval=self.poll_interval,
                    on_review=self.on_review.value,
                ),
                method_name="execute_complete",
            )
        run = hook.wait_for_run(
            run.flow_id, run.id, deadline=deadline, poll_interval=self.poll_interval, on_review=self.on_review
        )
        if is_settled(run, self.on_review):
            return self.settle(context, run, deadline)
        self._give_up(hook, run.flow_id, run.id, run)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger fired: its event carries the run as the task would return it."""
        outcome = event.get("outcome")
        if outcome == "error":
            raise FlowRunsError(event.get("message", "the trigger failed without a message"))
        run = FlowRun.model_validate(event["run"]) if event.get("run") else None
        if outcome == "settled" and run is not None:
            return self.settle(context, run, float(event.get("deadline") or time.time() + self.timeout))
        if outcome == "timeout":
            self._give_up(self.hook, event.get("flow_id"), event["run_id"], run)
        raise FlowRunsError(f"The trigger sent an event this operator does not understand: {event!r}")

    def _give_up(self, hook: FlowRunsHook, flow_id: str | None, run_id: str, run: FlowRun | None) -> NoReturn:
        self._run = run or self._run
        if run is not None:
            log.info("%s", closing_line(run))
        cancelled = self.cancel_on_timeout and hook.cancel_run(flow_id, run_id)
        raise timed_out(run, run_id, hook.platform.label, cancelled=cancelled, can_cancel=hook.platform.can_cancel)
