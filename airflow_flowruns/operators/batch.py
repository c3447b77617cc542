"""Run a flow once per document of a whole archive, in one task, and wait for every run."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.providers.common.compat.sdk import BaseOperator, ObjectStoragePath, conf

from airflow_flowruns.batch.carried import CARRIED, expected, ignored, since, strays, under_way
from airflow_flowruns.batch.census import Census, take_census
from airflow_flowruns.batch.counted import settled_counter
from airflow_flowruns.batch.documents import BatchKeys, Document, collect_documents
from airflow_flowruns.batch.ledger import Ledger
from airflow_flowruns.batch.progress import Outcome, ProgressLog, live_count, verdict
from airflow_flowruns.batch.results import Reporter, judge, manifest_target
from airflow_flowruns.batch.submit import Plan, Submission, plan_try, presigned_url
from airflow_flowruns.exceptions import FlowRunsConfigError, FlowRunsError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.operators._batch_review import (
    HANDED_TO_REVIEW_KEY,
    add_review_task,
    handed_to_review,
    refuse_review_of_shards,
)
from airflow_flowruns.operators._connection import FlowRunsConnectionMixin
from airflow_flowruns.operators._document_events import document_alias, document_event
from airflow_flowruns.operators._outputs import output_target
from airflow_flowruns.operators._reattach import task_try
from airflow_flowruns.operators._waiting import check_can_wait
from airflow_flowruns.platforms.start import StartRequest
from airflow_flowruns.platforms.values import require_json_object, require_text
from airflow_flowruns.starting import TaskTry
from airflow_flowruns.triggers.batch import FlowRunBatchTrigger
from airflow_flowruns.waiting import OnReview, check_poll_interval, check_timeout

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

BATCH_XCOM_KEY = "flowruns_batch"
"""XCom key of the batch summary, pushed before the task's outcome is decided (a failed task has one too)."""


def batch_key(context: Context) -> str:
    """The batch's key: the same on every try and for every shard (map index) of one task in one DAG run."""
    ti = context["ti"]
    parts = (ti.dag_id, ti.task_id, ti.run_id)
    return "af-" + hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


class FlowRunBatchOperator(FlowRunsConnectionMixin, BaseOperator):
    """Start one run per document of a folder, glob or list, at the platform's pace, and wait for all of them.

    A retry (or a cleared task) resumes: documents whose run is alive or succeeded are followed, failed or
    cancelled ones are run again, never-started ones are started, and no document gets two live runs. One
    deferral follows every run; XCom holds counts and a bounded list of failed and review documents, the
    manifest every document. See the how-to *Backfill an archive* for each argument.

    :param flowruns_conn_id: the platform's connection; without one, the default connection, as for
        ``FlowRunOperator``.
    :param documents: a folder (ending in ``/``; every file below it), a glob, or a list of
        ``{"files": {field: path(s)}, "key": ..., "metadata": {...}}`` items (templated).
    :param file_field: the field each file of a folder or glob goes under (default: the flow's only one).
    :param max_failed: the most failed or cancelled documents the task succeeds with (None: any number).
    :param min_succeeded: the fewest succeeded documents the task succeeds with (None: no floor).
    :param max_in_flight: the most live runs at once (None: only the connection's rate limit paces starts).
    :param pass_by_url: send documents on object storage by presigned URL, where the platform takes URLs.
    :param shard: this task's share of the documents, from 0 to ``shard_count - 1`` (map over
        ``list(range(n))``: a ``range`` reaches a mapped task as its text).
    :param document_asset: an asset to announce once per settled document (an asset event each).
    :param on_review: as for ``FlowRunOperator``; with ``"airflow"`` each document in review gets a Required
        Action of its own, in the mapped task ``{task_id}_review`` made beside this one.
    :param max_open_reviews: the most of those Required Actions open at once.
    :param review_assignees: the Airflow users who may answer them.
    """

    template_fields: Sequence[str] = (
        "flowruns_conn_id",
        "flow_id",
        "documents",
        "metadata",
        "inputs",
        "flow_version",
        "outputs_to",
        "manifest_to",
    )
    template_fields_renderers = {"documents": "json", "metadata": "json", "inputs": "json"}
    ui_color = "#e6f0ff"

    def __init__(
        self,
        *,
        flow_id: str,
        documents: Any,
        flowruns_conn_id: str | None = None,
        file_field: str | None = None,
        metadata: Mapping[str, Any] | str | None = None,
        inputs: Mapping[str, Any] | None = None,
        flow_version: str | None = None,
        on_review: str = "succeed",
        timeout: float = 24 * 60 * 60,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 60,
        outputs_to: str | ObjectStoragePath | None = None,
        manifest_to: str | ObjectStoragePath | None = None,
        min_succeeded: int | None = None,
        max_failed: int | None = 0,
        max_in_flight: int | None = None,
        pass_by_url: bool = False,
        shard: int = 0,
        shard_count: int = 1,
        document_asset: Any = None,
        follow_symlinks: bool = False,
        cancel_on_timeout: bool = True,
        max_open_reviews: int = 20,
        review_assignees: str | Sequence[str | Mapping[str, str]] | None = None,
        **kwargs: Any,
    ) -> None:
        if document_asset is not None:
            kwargs["outlets"] = [*kwargs.get("outlets", []), document_alias(document_asset)]
        super().__init__(**kwargs)
        self.flowruns_conn_id = flowruns_conn_id
        self.flow_id = flow_id
        self.documents = documents
        self.file_field = file_field
        self.metadata = metadata
        self.inputs = inputs
        self.flow_version = flow_version
        self.on_review = OnReview.parse(on_review)
        self.timeout = check_timeout(timeout)
        self.deferrable = deferrable
        self.poll_interval = check_poll_interval(poll_interval)
        self.outputs_to = outputs_to
        self.manifest_to = manifest_to
        self.min_succeeded = _count_or_none(min_succeeded, "min_succeeded")
        self.max_failed = _count_or_none(max_failed, "max_failed")
        self.max_in_flight = _count_or_none(max_in_flight, "max_in_flight", least=1)
        self.pass_by_url = pass_by_url
        self.shard = shard
        self.shard_count = shard_count
        self.document_asset = document_asset
        self.follow_symlinks = follow_symlinks
        self.cancel_on_timeout = cancel_on_timeout
        max_open = _count_or_none(max_open_reviews, "max_open_reviews", least=1)
        self.review_task = add_review_task(
            self, kwargs["task_id"], max_open_reviews=max_open, assignees=review_assignees
        )

    def execute(self, context: Context) -> dict[str, Any]:
        self._stop = threading.Event()  # made per execution: a task is copied, and an event cannot be
        began = datetime.now(UTC).isoformat()
        return self._advance(context, {"try_began": began, "deadline": time.time() + self.timeout, "started": 0})

    def execute_complete(self, context: Context, event: dict[str, Any], **state: Any) -> dict[str, Any]:
        """Resume after the trigger fired: start more documents (``room``) or report the batch. ``state`` is
        what the deferral carried (a resume that lost it, as ``airflow dags test`` does, starts from defaults)."""
        self._stop = threading.Event()
        state = {"deadline": time.time() + self.timeout, "started": 0, **state, "resumed": True}
        outcome = event.get("outcome")
        if outcome == "error":
            raise FlowRunsError(event.get("message", "the batch trigger failed without a message"))
        if outcome == Outcome.ROOM:
            return self._advance(context, state, Counter(event.get("counts") or {}))
        if outcome in (Outcome.SETTLED, Outcome.TIMEOUT):
            return self._finish(context, Outcome(outcome), state)
        raise FlowRunsError(f"The batch trigger sent an event this operator does not understand: {event!r}")

    def _advance(self, context: Context, state: dict[str, Any], counts: Counter[str] | None = None) -> dict[str, Any]:
        """Start what this try must start, as far as ``max_in_flight`` lets it, then wait; in the worker, loop
        until every document is started and settled."""
        while True:
            setup = hook, keys, documents = self._setup(context)
            pending = self._start_some(context, hook, keys, documents, state, counts)
            outcome, census = self._wait(hook, keys, expected(documents, state), pending, state)
            if outcome is not Outcome.ROOM:
                return self._finish(context, outcome, state, setup, census)
            counts = census.counts()
            state = {**state, "resumed": True}

    def _setup(self, context: Context) -> tuple[FlowRunsHook, BatchKeys, list[Document]]:
        """The connection, the shard's keys and its documents, every argument checked before any start."""
        hook = self.hook
        keys = BatchKeys(batch_key(context), self.shard, self.shard_count)
        flow_id = require_text(self.flow_id, "flow_id")
        field = self.file_field or (
            hook.platform.default_file_field(hook.client, flow_id) if not isinstance(self.documents, list) else None
        )
        refuse_review_of_shards(self, self.on_review)
        check_can_wait(hook, deferrable=self.deferrable, on_review=self.on_review)  # or its review sensors
        documents = collect_documents(self.documents, field, keys, follow_symlinks=self.follow_symlinks)
        if not hook.platform.takes_metadata and (self.metadata or any(doc.metadata for doc in documents)):
            raise FlowRunsConfigError(
                f"{hook.platform.label} runs keep no metadata: drop metadata= and the documents' 'metadata'."
            )
        if self.pass_by_url:
            if not hook.platform.takes_file_urls:
                raise FlowRunsConfigError(f"{hook.platform.label} takes no file by URL: drop pass_by_url.")
            if documents:
                presigned_url(documents[0].only_file())
        return hook, keys, documents

    def _start_some(
        self,
        context: Context,
        hook: FlowRunsHook,
        keys: BatchKeys,
        documents: list[Document],
        state: dict[str, Any],
        counts: Counter[str] | None,
    ) -> int:
        """Plan this try (or this resume) and start as many documents as may be live now; how many wait."""
        this_try = task_try(context, self.log)
        ledger = Ledger(context.get("task_state_store"), this_try.number)
        plan, census = self._plan(hook, keys, documents, state, ledger, this_try)
        to_start = plan.to_start
        if self.max_in_flight is not None and not hook.platform.synchronous:
            live = live_count(census.counts() if census else counts or Counter(), self.on_review)
            to_start = to_start[: max(0, self.max_in_flight - live)]
        submission = Submission(
            hook, self._template(), keys, ledger, this_try, self.pass_by_url, plan.earlier, self._stop
        )
        state["started"] = state.get("started", 0) + submission.start(to_start)
        state["refused"] = sorted(set(state.get("refused") or ()) | set(submission.refused))
        state["since"] = this_try.runs_since.isoformat() if this_try.runs_since else None
        return len(plan.to_start) - len(to_start)

    def _plan(
        self,
        hook: FlowRunsHook,
        keys: BatchKeys,
        documents: list[Document],
        state: dict[str, Any],
        ledger: Ledger,
        this_try: TaskTry,
    ) -> tuple[Plan, Census | None]:
        """What this execution does with each document, from the ledger and, where it must, the listing."""
        resumed = bool(state.get("resumed"))
        view = ledger.load()
        wants_census = not ledger.kept or bool(view.unsure) or (not resumed and bool(view.started))
        census = None
        if (resumed or this_try.number > 1) and wants_census:
            walks = 1 if ledger.kept and not view.unsure else 2  # what no ledger names is started only if unseen twice
            census = take_census(hook, self.flow_id, keys, this_try.runs_since, walks, ignored(state))
            state["ignore"] = strays(census, keys, documents, state)
        rerun_before = None if resumed else datetime.fromisoformat(state["try_began"])
        plan = plan_try(documents, keys, view, census, rerun_before)
        self.log.info(
            "%d documents in this shard: %d followed, %d to start (%d of them run again), %d refused.",
            len(documents),
            plan.following,
            len(plan.to_start),
            plan.rerunning,
            plan.refused,
        )
        return plan, census

    def _wait(
        self, hook: FlowRunsHook, keys: BatchKeys, documents: int, pending: int, state: dict[str, Any]
    ) -> tuple[Outcome, Census]:
        """Count the batch's runs until the wait ends; deferrable, after the first count, in the triggerer.

        The first count is the worker's own: a batch whose runs all settled already (a retry after they did)
        ends here, never deferring to a trigger that would fire at once: Airflow 3.3's scheduler can take an
        event that arrives seconds after the deferral for a failed try (apache/airflow#66374, #72716).
        """
        progress = ProgressLog(documents, self.on_review)
        while True:
            census = take_census(hook, self.flow_id, keys, since(state), ignored=ignored(state))
            counts = census.counts()
            outcome = verdict(counts, documents, pending, self.max_in_flight, self.on_review)
            if outcome is None and time.time() >= state["deadline"]:
                outcome = Outcome.TIMEOUT
            if outcome is not None:
                return outcome, census
            if self.deferrable and not hook.platform.synchronous:
                self._defer(keys, documents, pending, state)
            self.log.info("%s", progress.line(counts, hook.client.limited_answers))
            time.sleep(max(0.0, min(self.poll_interval, state["deadline"] - time.time())))

    def _defer(self, keys: BatchKeys, documents: int, pending: int, state: dict[str, Any]) -> NoReturn:
        """Hand the wait to one trigger; the state it carries comes back to ``execute_complete``."""
        self.defer(
            trigger=FlowRunBatchTrigger(
                conn_id=self.hook.flowruns_conn_id,
                flow_id=self.flow_id,
                batch_key=keys.batch_key,
                shard=keys.shard,
                shard_count=keys.shard_count,
                since=state.get("since"),
                documents=documents,
                pending=pending,
                deadline=state["deadline"],
                poll_interval=self.poll_interval,
                on_review=self.on_review.value,
                max_in_flight=self.max_in_flight,
                ignore=state.get("ignore"),
                manifest=self._manifest(keys),
            ),
            method_name="execute_complete",
            kwargs={name: state.get(name) for name in CARRIED},
        )
        raise AssertionError("unreachable: defer raises")  # pragma: no cover

    def _finish(
        self,
        context: Context,
        outcome: Outcome,
        state: dict[str, Any],
        setup: tuple[FlowRunsHook, BatchKeys, list[Document]] | None = None,
        census: Census | None = None,
    ) -> dict[str, Any]:
        """Land and list every document from the final census, then decide the task's state. ``setup`` and
        ``census``: what a wait in this same execution already had, so neither is taken again.

        Counts can settle early when runs of documents no longer in the batch (renamed or removed between tries)
        were counted: then those are set aside and the wait goes on until every document now in it settled.
        """
        hook, keys, documents = setup or self._setup(context)
        census = census or take_census(hook, self.flow_id, keys, since(state), ignored=ignored(state))
        while outcome is Outcome.SETTLED and under_way(census, keys, documents, self.on_review):
            state["ignore"] = strays(census, keys, documents, state)
            self.log.warning("Runs of documents no longer in the batch were counted; waiting for the others.")
            outcome, census = self._wait(hook, keys, expected(documents, state), 0, state)
        if outcome is Outcome.TIMEOUT and self.cancel_on_timeout:
            self._cancel_live(hook, census)
        settled = None
        if self.document_asset is not None:
            settled = document_event(context, self.document_asset, hook.platform.name, self.flow_id)
        number = task_try(context, self.log).number
        ledger = Ledger(context.get("task_state_store"), number)
        view = ledger.load()  # this try's refusals, and the runs it started: those its metrics count
        reporter = Reporter(
            hook,
            self.flow_id,
            census,
            output_target(self.outputs_to, "outputs_to"),
            output_target(self.manifest_to, "manifest_to"),
            settled,
            _refusals(state, view.refused),
            settled_counter(hook, number, state.get("try_began"), view if ledger.kept else None),
        )
        result = reporter.report(documents, len(documents))
        summary = result.to_xcom(hook.platform.name, self.flow_id, state.get("started", 0))
        context["ti"].xcom_push(key=BATCH_XCOM_KEY, value=summary)
        if self.on_review is OnReview.AIRFLOW:
            context["ti"].xcom_push(key=HANDED_TO_REVIEW_KEY, value=handed_to_review(result, self.flow_id))
        judge(result, outcome, self.on_review, self.max_failed, self.min_succeeded)
        return summary

    def on_kill(self) -> None:
        """The task is being killed while it starts documents: send no further start (the runs it started go
        on, and a retry follows them)."""
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()

    def _manifest(self, keys: BatchKeys) -> str | None:
        target = manifest_target(
            output_target(self.outputs_to, "outputs_to"), output_target(self.manifest_to, "manifest_to"), keys
        )
        return str(target) if target is not None else None

    def _cancel_live(self, hook: FlowRunsHook, census: Census) -> None:
        for seen in census.newest.values():
            if not seen.state.is_final:
                hook.cancel_run(self.flow_id, seen.run_id)

    def _template(self) -> StartRequest:
        """What every document's start shares; each adds its files, key and metadata."""
        return StartRequest(
            flow_id=require_text(self.flow_id, "flow_id"),
            metadata=require_json_object(self.metadata, "metadata"),
            inputs=require_json_object(self.inputs, "inputs"),
            flow_version=str(self.flow_version) if self.flow_version else None,
        )


def _refusals(state: Mapping[str, Any], kept: Mapping[str, str]) -> dict[str, str]:
    """The documents refused in this try, with the reasons the ledger kept (Airflow 3.3+)."""
    why = "refused by the platform: the task log says why"
    return {key: kept.get(key, why) for key in state.get("refused") or ()}


def _count_or_none(value: Any, name: str, least: int = 0) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise FlowRunsConfigError(f"{name} must be a whole number >= {least} or None, not {value!r}.")
    return value


__all__ = ["BATCH_XCOM_KEY", "FlowRunBatchOperator", "batch_key"]
