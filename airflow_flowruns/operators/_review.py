"""Review in Airflow for the operator and the sensor: the run in review becomes the task's Required Action,
and whichever decides first, a person in Airflow or the review in the vendor's app, decides the task.

The task creates the Required Action and defers, deferrable or not: only the triggerer may read or answer one.
When both happen at once, the trigger closes the item as it sees the run settle, and Airflow takes one answer
only, so a person's answer recorded before that close decides; after it, Airflow refuses the answer. A
person's "wait" leaves the decision to the vendor's app.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_flowruns.exceptions import FlowRunRejectedError, FlowRunsConfigError, FlowRunsError, FlowRunTimeoutError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.operators._connection import FlowRunsConnectionMixin
from airflow_flowruns.platforms import facts_of, output_reader, registered
from airflow_flowruns.platforms.base import FlowRun, RunState
from airflow_flowruns.review.ask import (
    Choice,
    Decision,
    Pending,
    answer_decision,
    build_ask,
    uncertain_fields,
    vendor_decision,
)
from airflow_flowruns.review.items import open_item
from airflow_flowruns.review.register import record_review, register_entry
from airflow_flowruns.triggers.review import FlowRunReviewTrigger
from airflow_flowruns.version_compat import AIRFLOW_V_3_3_PLUS
from airflow_flowruns.waiting import OnReview, finish

if TYPE_CHECKING:
    from datetime import timedelta

    from airflow.providers.common.compat.sdk import Context
    from airflow.triggers.base import BaseTrigger

log = logging.getLogger(__name__)

REVIEW_KEY = "review"
"""XCom key of the decision: who, when, where, what, and the edited fields."""
PENDING_KEY = "flowruns_review_pending"
"""XCom key of the review under way, read back when the task resumes on an answer."""


def check_confidence_gate(platform: str, threshold: float | None) -> None:
    """Refuse ``review_below_confidence`` on a platform whose outputs carry no confidence, before any run starts."""
    if threshold is None or facts_of(platform).reports_confidence:
        return
    able = ", ".join(facts.label for facts in registered() if facts.reports_confidence)
    raise FlowRunsConfigError(
        f"review_below_confidence needs outputs with a confidence, and {facts_of(platform).label} gives none "
        f"(platforms that do: {able}). Drop review_below_confidence, or use on_review='airflow' alone."
    )


class FlowRunReviewMixin(FlowRunsConnectionMixin):
    """Raises the Required Action, waits for whichever decides first, and turns the decision into the result."""

    on_review: OnReview
    poll_interval: float
    deferrable: bool
    review_below_confidence: float | None
    review_assignees: list[dict[str, str]] | None
    document: str | None
    _run: FlowRun | None
    _decision: Decision | None

    if TYPE_CHECKING:

        def defer(
            self,
            *,
            trigger: BaseTrigger,
            method_name: str,
            kwargs: dict[str, Any] | None = None,
            timeout: timedelta | int | float | None = None,
        ) -> NoReturn: ...

    def settle(self, context: Context, run: FlowRun, deadline: float) -> dict[str, Any]:
        """The task's result for a settled run, asking a person first where the review policy says so."""
        self._run = run
        if run.state is RunState.NEEDS_REVIEW and self.on_review is OnReview.AIRFLOW:
            return self._ask(context, run, deadline, in_review=True)
        if run.state is RunState.SUCCEEDED and self.review_below_confidence is not None:
            full = self.hook.get_run(run.flow_id, run.id)
            outputs = output_reader(full.platform).read(full.raw)
            if not outputs.reviewed and uncertain_fields(outputs, self.review_below_confidence):
                return self._ask(context, full, deadline, in_review=False)
        return finish(run, self.on_review)

    def _ask(self, context: Context, run: FlowRun, deadline: float, *, in_review: bool) -> NoReturn:
        """Raise the Required Action and defer to the review trigger, also when the task is not deferrable:
        Airflow serves reads and answers of a Required Action to the triggerer only."""
        hook = self.hook
        full = run if run.raw else hook.get_run(run.flow_id, run.id)
        label = hook.platform.label
        outputs = output_reader(full.platform).read(full.raw)
        ask = build_ask(
            full, outputs, label, document=self.document, threshold=self.review_below_confidence, in_review=in_review
        )
        pending = Pending(full.flow_id, full.id, deadline, in_review, ask.extracted, self.document)
        ti = context["ti"]
        ti.xcom_push(key=PENDING_KEY, value=pending.to_xcom())
        open_item(ti.id, ask, self.review_assignees)
        elsewhere = f", or in {label}: {full.url}" if in_review and full.url else ""
        log.info("Run %s awaits review: answer its Required Action in Airflow%s", full.id, elsewhere)
        self._defer_review(context, pending, close_with=ask.labels[0])

    def _defer_review(self, context: Context, pending: Pending, *, close_with: str | None) -> NoReturn:
        self.defer(
            trigger=FlowRunReviewTrigger(
                conn_id=self.hook.flowruns_conn_id,
                platform=self.hook.platform.name,
                flow_id=pending.flow_id,
                run_id=pending.run_id,
                deadline=pending.deadline,
                poll_interval=self.poll_interval,
                ti_id=str(context["ti"].id),
                watch_answer=close_with is not None and not AIRFLOW_V_3_3_PLUS,
                follow_run=pending.in_review,
                close_with=close_with,
            ),
            method_name="review_complete",
        )

    def review_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume on the review trigger's event, or on Airflow's own when a person answered (Airflow 3.3+)."""
        hook = self.hook
        ti = context["ti"]
        pending = Pending.from_xcom(ti.xcom_pull(key=PENDING_KEY, task_ids=ti.task_id, map_indexes=ti.map_index))
        if pending is None:
            raise FlowRunsError("The task resumed from review without the review it raised (its XCom is missing).")
        if "chosen_options" in event:  # Airflow resumed the task on the answer itself
            event = {"outcome": "answered", "answer": event}
        outcome = event.get("outcome")
        if outcome == "error":
            raise FlowRunsError(event.get("message", "the trigger failed without a message"))
        run = self._run = hook.get_run(pending.flow_id, pending.run_id)
        if outcome == "answered":
            return self._decide(
                context, hook, run, pending, answer_decision(pending.ask(hook.platform.label), event["answer"])
            )
        if outcome == "settled":
            return self._vendor_decided(context, hook, run)
        if outcome == "timeout":
            raise FlowRunTimeoutError(
                f"The deadline passed while {hook.platform.label} run {run.id!r} waited for review ({run.status}). "
                "Its Required Action was closed; the run is left as it is on the platform. Raise timeout if "
                "reviews take this long."
            )
        raise FlowRunsError(f"The review trigger sent an event this task does not understand: {event!r}")

    def _vendor_decided(self, context: Context, hook: FlowRunsHook, run: FlowRun) -> dict[str, Any]:
        """The run settled in the vendor's app (the trigger closed the Required Action): its final state decides."""
        decision = vendor_decision(run, hook.platform.label)
        self._record(context, run, decision)
        return {**finish(run, OnReview.SUCCEED), REVIEW_KEY: decision.to_xcom()}

    def _decide(
        self, context: Context, hook: FlowRunsHook, run: FlowRun, pending: Pending, decision: Decision | None
    ) -> dict[str, Any]:
        """Act on a person's answer: accept succeeds with the fields as edited, reject fails, wait waits on."""
        if decision is None:
            raise FlowRunsError(f"The Required Action of run {run.id} was answered with an option it never offered.")
        if decision.decision == Choice.WAIT:
            if run.state.is_final:
                return self._vendor_decided(context, hook, run)
            log.info("%s chose to wait for the review in %s.", decision.by, hook.platform.label)
            self._defer_review(context, pending, close_with=None)
        self._record(context, run, decision)
        if decision.decision == Choice.REJECT:
            what, why = pending.document or f"run {run.id!r}", decision.note or "no reason given"
            raise FlowRunRejectedError(f"{decision.by} rejected {what} in Airflow: {why}.")
        return {**run.to_xcom(), REVIEW_KEY: decision.to_xcom()}

    def _record(self, context: Context, run: FlowRun, decision: Decision) -> None:
        """Keep the decision in XCom and, when a person took it in Airflow, in the register the export reads."""
        self._run, self._decision = run, decision
        ti = context["ti"]
        ti.xcom_push(key=REVIEW_KEY, value=decision.to_xcom())
        if decision.where == "airflow" and decision.decision in (Choice.ACCEPT, Choice.REJECT):
            task = {"dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": ti.run_id, "map_index": ti.map_index}
            record_review(run.platform, run.id, register_entry(decision, task))
