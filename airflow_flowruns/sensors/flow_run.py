"""Wait for a run that something else started, e.g. a FlowRunOperator with wait_for_completion=False."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseSensorOperator, PokeReturnValue, conf

from airflow_flowruns import metrics
from airflow_flowruns.client.retry import until
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.links import FLOW_RUN_ID_KEY, FLOW_RUN_URL_KEY, FlowRunLink
from airflow_flowruns.operators._review import check_confidence_gate
from airflow_flowruns.operators._waiting import FlowRunWaitMixin, check_can_wait
from airflow_flowruns.platforms.base import FlowRun
from airflow_flowruns.platforms.values import require_text
from airflow_flowruns.review.ask import Decision, assignees, threshold_of
from airflow_flowruns.waiting import OnReview, WaitProgress, check_poll_interval, is_settled

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


class FlowRunSensor(FlowRunWaitMixin, BaseSensorOperator):
    """Succeeds when the run settles; fails when it ends failed or cancelled.

    Works in ``poke``, ``reschedule`` and deferrable modes. The deadline is the sensor's ``timeout``
    counted from the first check; in deferrable mode it is carried into the trigger as an absolute time.

    :param flowruns_conn_id: the run's connection; without one, the default connection, as for
        ``FlowRunOperator``.
    :param run_id: the run to follow (templated, e.g. from the operator's ``flow_run_id`` XCom).
    :param flow_id: the run's flow; needed by platforms that address runs under their flow.
    :param on_review: ``"succeed"``, ``"fail"`` or ``"wait"`` when the run stops for human review, or
        ``"airflow"``: raise an Airflow Required Action, as ``FlowRunOperator`` does.
    :param review_below_confidence: raise it too for a run that finished with a field below this confidence.
    :param review_assignees: the Airflow users who may answer the Required Action.
    :param document: what the Required Action's subject names the run by (e.g. a batch document's key).
    :param cancel_on_timeout: cancel the run when the deadline passes (off: the sensor did not start it).
    """

    template_fields: Sequence[str] = ("flowruns_conn_id", "run_id", "flow_id", "document")
    ui_color = "#e6f0ff"
    operator_extra_links = (FlowRunLink(),)

    def __init__(
        self,
        *,
        run_id: str,
        flow_id: str | None = None,
        flowruns_conn_id: str | None = None,
        on_review: str = "succeed",
        review_below_confidence: float | None = None,
        review_assignees: str | Sequence[str | Mapping[str, str]] | None = None,
        document: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        cancel_on_timeout: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.run_id = run_id
        self.flow_id = flow_id
        self.flowruns_conn_id = flowruns_conn_id
        self.on_review = OnReview.parse(on_review)
        self.review_below_confidence = threshold_of(review_below_confidence)
        self.review_assignees = assignees(review_assignees)
        self.document = document
        self._decision: Decision | None = None
        self.deferrable = deferrable
        self.cancel_on_timeout = cancel_on_timeout
        self.poll_interval = check_poll_interval(self.poke_interval)
        self._run: FlowRun | None = None
        self._progress: WaitProgress | None = None  # made by the first poke of this try

    def execute(self, context: Context) -> Any:
        require_text(self.run_id, "run_id")
        hook = self.hook
        check_confidence_gate(hook.platform.name, self.review_below_confidence)
        check_can_wait(hook, deferrable=self.deferrable, on_review=self.on_review)
        if not self.deferrable:
            return super().execute(context)
        deadline = time.time() + self.timeout
        with until(deadline):  # a StackAI read walks the listing: it ends by the sensor's deadline too
            run = self._read_run(hook, context)
        return self.wait_for_run(context, hook, run, deadline)

    def poke(self, context: Context) -> PokeReturnValue:
        run = self._read_run(self.hook, context)
        if not is_settled(run, self.on_review):
            self._progress = self._progress or WaitProgress(self.log)
            self._progress.seen(run, next_check=self.poll_interval)
            return PokeReturnValue(is_done=False)
        metrics.settled(run, self.hook.flowruns_conn_id)
        return PokeReturnValue(is_done=True, xcom_value=self.settle(context, run, time.time() + self.timeout))

    def _read_run(self, hook: FlowRunsHook, context: Context) -> FlowRun:
        """Read the run; on the first read, push its id and URL like the operator does, for the extra link."""
        run = hook.get_run(self.flow_id or None, require_text(self.run_id, "run_id"))
        ti = context.get("ti")  # absent when poke() is called by hand
        if self._run is None and ti is not None:
            ti.xcom_push(key=FLOW_RUN_ID_KEY, value=run.id)
            ti.xcom_push(key=FLOW_RUN_URL_KEY, value=run.url)
        self._run = run
        return run
