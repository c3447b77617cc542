"""Start a flow run with files and wait for it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator, ObjectStoragePath, conf

from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.files import FileArgument, collect_files
from airflow_flowruns.links import FLOW_RUN_ID_KEY, FLOW_RUN_URL_KEY, FlowRunLink
from airflow_flowruns.operators._outputs import check_output_limit, output_target, place_outputs
from airflow_flowruns.operators._reattach import PREVIOUS_RUN_ID_KEY, TaskRecord, task_key, task_try
from airflow_flowruns.operators._review import check_confidence_gate
from airflow_flowruns.operators._waiting import FlowRunWaitMixin, check_can_wait
from airflow_flowruns.outputs.landing import Landing, land_run
from airflow_flowruns.platforms.base import FlowRun
from airflow_flowruns.platforms.start import FilePath, StartRequest
from airflow_flowruns.platforms.values import require_json_object, require_text
from airflow_flowruns.review.ask import Decision, assignees, threshold_of
from airflow_flowruns.starting import START_ATTEMPTS, start_once
from airflow_flowruns.waiting import OnReview, check_poll_interval, check_timeout, deadline_after

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context
    from airflow.providers.openlineage.extractors import OperatorLineage

DEFAULT_TIMEOUT = 24 * 60 * 60
"""The default ``timeout`` of the tasks that start runs (a day), written out in their signatures."""


class FlowRunOperator(FlowRunWaitMixin, BaseOperator):
    """Upload files to a flow, start one run, push its id and URL to XCom at once, then wait for it.

    :param flowruns_conn_id: connection whose type names the platform (``tableflow``, ...). Without one,
        ``flowruns_default`` if it exists, else the one ``<platform>_default`` connection that exists (see
        ``FlowRunsHook``).
    :param flow_id: the flow (workflow) to run.
    :param files: field name to a path, or to a list of paths for a field that takes several files. A path is
        local, an ``ObjectStoragePath`` or a URI (``s3://``, ``gs://``, ``file://``, ...); a glob or a folder
        written with a trailing ``/`` expands to several files (see ``airflow_flowruns.files``).
    :param run_name: display name of the run, where the platform keeps one.
    :param metadata: JSON object stored on the run and echoed back on every read of it.
    :param file_metadata: field name to a JSON object for that file's extraction.
    :param file_guidance: field name to a free-text extraction hint for that file.
    :param inputs: non-file inputs of the flow, for platforms whose flows take them (Noxus, StackAI).
    :param flow_version: the flow version to run, for platforms that version flows (Extend, Noxus).
    :param wait_for_completion: wait for the run to settle; otherwise return once it has started.
    :param deferrable: wait in the triggerer instead of holding a worker slot.
    :param poll_interval: seconds between status checks.
    :param timeout: seconds from the start of the run to an absolute deadline, computed once.
    :param on_review: ``"succeed"``, ``"fail"`` or ``"wait"`` when the run stops for human review, or
        ``"airflow"``: raise an Airflow Required Action that a person answers in Airflow (accept, edit, reject)
        unless the review ends in the vendor's app first.
    :param review_below_confidence: raise the same Required Action for a run that finished with any field below
        this confidence (0 to 1), on platforms whose outputs carry one (Extend).
    :param review_assignees: the Airflow users who may answer the Required Action (names, or ``{"id", "name"}``).
    :param cancel_on_timeout: cancel the run when the deadline passes, where the platform can.
    :param output_path: where outputs of a synchronous run (StackAI) go when they are larger than
        ``max_xcom_output_bytes``: an ``ObjectStoragePath`` or URI (templated); XCom then holds the path.
        Larger outputs without it fail the task; the run is kept and a retry re-attaches to it.
    :param outputs_to: land the settled run's outputs under this folder or URI (templated), as
        ``FlowRunOutputsOperator`` does; XCom then holds ``landing``
        (paths, counts, bytes) and never the outputs themselves, on every platform (StackAI's are in the
        landed ``outputs.json``; ``output_path`` cannot be set beside it). A landing that fails fails the task;
        its retry re-attaches to the run and lands it again.
    :param max_xcom_output_bytes: the largest outputs (as JSON) returned in XCom under ``outputs`` (without
        ``outputs_to``).
    :param follow_symlinks: let a folder or glob in ``files`` send files that symbolic links lead to outside it
        (off: such a link fails the task before anything is uploaded).
    :param reattach: on a retry or a cleared task, follow the run an earlier try of this task instance
        started while it is queued, running, waiting for review or succeeded, and start a fresh run only when
        it failed or was cancelled (``False``: every try starts a fresh run).
    """

    template_fields: Sequence[str] = (
        "flowruns_conn_id",
        "flow_id",
        "files",
        "run_name",
        "metadata",
        "file_metadata",
        "file_guidance",
        "inputs",
        "flow_version",
        "output_path",
        "outputs_to",
    )
    template_fields_renderers = {"files": "json", "metadata": "json", "file_metadata": "json", "inputs": "json"}
    ui_color = "#e6f0ff"
    operator_extra_links = (FlowRunLink(),)

    def __init__(
        self,
        *,
        flow_id: str,
        flowruns_conn_id: str | None = None,
        files: Mapping[str, FileArgument] | None = None,
        run_name: str | None = None,
        metadata: Mapping[str, Any] | str | None = None,
        file_metadata: Mapping[str, Mapping[str, Any] | str] | None = None,
        file_guidance: Mapping[str, str] | None = None,
        inputs: Mapping[str, Any] | None = None,
        flow_version: str | None = None,
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30,
        timeout: float = 24 * 60 * 60,
        on_review: str = "succeed",
        review_below_confidence: float | None = None,
        review_assignees: str | Sequence[str | Mapping[str, str]] | None = None,
        cancel_on_timeout: bool = True,
        reattach: bool = True,
        follow_symlinks: bool = False,
        output_path: str | ObjectStoragePath | None = None,
        max_xcom_output_bytes: int = 64 * 1024,
        outputs_to: str | ObjectStoragePath | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.flowruns_conn_id = flowruns_conn_id
        self.flow_id = flow_id
        self.files = files
        self.run_name = run_name
        self.metadata = metadata
        self.file_metadata = file_metadata
        self.file_guidance = file_guidance
        self.inputs = inputs
        self.flow_version = flow_version
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = check_poll_interval(poll_interval)
        self.timeout = check_timeout(timeout)
        self.on_review = OnReview.parse(on_review)
        self.review_below_confidence = threshold_of(review_below_confidence)
        self.review_assignees = assignees(review_assignees)
        self.document: str | None = None
        self._decision: Decision | None = None
        self.cancel_on_timeout = cancel_on_timeout
        self.reattach = reattach
        self.follow_symlinks = follow_symlinks
        self.output_path = output_path
        self.max_xcom_output_bytes = check_output_limit(max_xcom_output_bytes)
        self.outputs_to = outputs_to
        self._run: FlowRun | None = None
        self._landing: Landing | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        request = self.start_request()
        deadline_after(self.timeout)  # a bad timeout fails here, before anything is uploaded
        target = output_target(self.output_path)
        landing_to = output_target(self.outputs_to, "outputs_to")
        if landing_to is not None and not self.wait_for_completion:
            raise FlowRunsConfigError(
                "outputs_to lands a finished run's outputs, and wait_for_completion=False does not wait for it: "
                "set wait_for_completion=True, or land them later with FlowRunOutputsOperator."
            )
        if landing_to is not None and target is not None:
            raise FlowRunsConfigError(
                "output_path and outputs_to are both set: with outputs_to the run's outputs land in its "
                "outputs.json and XCom holds only where they went. Drop output_path."
            )
        hook = self.hook
        check_confidence_gate(hook.platform.name, self.review_below_confidence)
        check_can_wait(hook, deferrable=self.deferrable, on_review=self.on_review)
        self.document = _document_names(request.files)
        run = self._run = start_once(
            hook, request, task_key(context), TaskRecord(context), task_try(context, self.log), reattach=self.reattach
        )
        deadline = deadline_after(self.timeout)
        context["ti"].xcom_push(key=FLOW_RUN_ID_KEY, value=run.id)
        context["ti"].xcom_push(key=FLOW_RUN_URL_KEY, value=run.url)
        self.log.info("Following %s run %s of flow %s: %s", run.platform, run.id, run.flow_id, run.url)
        if hook.platform.synchronous and self.deferrable:
            self.log.info("%s has no asynchronous runs: the run ran in the worker, not deferred.", hook.platform.label)
        result = self.wait_for_run(context, hook, run, deadline) if self.wait_for_completion else run.to_xcom()
        if landing_to is not None:  # the outputs land in outputs.json: never in XCom
            return self._land(result)
        final = self._run or run  # the settled run, which may carry outputs a re-attached run did not yet
        outputs = final.outputs if final.outputs is not None else run.outputs
        return self._land(place_outputs(outputs, result, target, self.max_xcom_output_bytes))

    @property
    def settled_run(self) -> FlowRun | None:
        """The run as last seen: the settled run once the task has its outcome; None before a run started."""
        return self._run

    @property
    def landing(self) -> Landing | None:
        """Where ``outputs_to`` landed the settled run's outputs; None until they landed."""
        return self._landing

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        if self.on_review is OnReview.AIRFLOW or self.review_below_confidence is not None:
            # resumed in a fresh operator: name the files again, for the subject of a Required Action raised now
            self.document = _document_names(
                collect_files(self.files, check=False, follow_symlinks=self.follow_symlinks)
            )
        return self._land(super().execute_complete(context, event))

    def review_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        return self._land(super().review_complete(context, event))

    def _land(self, result: dict[str, Any]) -> dict[str, Any]:
        """With ``outputs_to``, land the settled run's outputs and add where they went to the result."""
        destination = output_target(self.outputs_to, "outputs_to")
        if destination is None or self._run is None:
            return result
        hook = self.hook
        run = hook.get_run(self._run.flow_id, self._run.id)
        self._landing = land_run(hook, run, destination, review=self._decision)
        return {**result, "landing": self._landing.to_xcom()}

    def start_request(self) -> StartRequest:
        """Check every argument that can be checked without the network, so bad input starts nothing."""
        return StartRequest(
            flow_id=require_text(self.flow_id, "flow_id"),
            files=collect_files(self.files, follow_symlinks=self.follow_symlinks),
            run_name=self.run_name or None,
            metadata=require_json_object(self.metadata, "metadata"),
            file_metadata={
                key: require_json_object(value, f"file_metadata[{key!r}]")
                for key, value in (self.file_metadata or {}).items()
            },
            file_guidance=dict(self.file_guidance or {}),
            inputs=require_json_object(self.inputs, "inputs"),
            flow_version=str(self.flow_version) if self.flow_version else None,
        )

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage[Any, Any]:
        """Called by the OpenLineage provider on success, and on failure for lack of an on_failure method."""
        from airflow_flowruns.lineage import flow_run_lineage

        # Only a run's dataset reads the hook's connection: a task that failed before it had a run looks none up.
        return flow_run_lineage(self.hook, self.files, str(self.flow_id), self.settled_run, self.landing)

    def on_kill(self) -> None:
        """The task was killed while waiting in the worker: cancel the run where the platform can."""
        if self._run is not None:
            self.hook.cancel_run(self._run.flow_id, self._run.id)


def _document_names(files: Mapping[str, FilePath | tuple[FilePath, ...]]) -> str | None:
    """The uploaded files' names, which a Required Action's subject shows as the document."""
    names = [f.name for value in files.values() for f in (value if isinstance(value, tuple) else (value,))]
    return ", ".join(names[:3]) + (", …" if len(names) > 3 else "") if names else None


__all__ = [
    "DEFAULT_TIMEOUT",
    "PREVIOUS_RUN_ID_KEY",
    "START_ATTEMPTS",
    "FlowRunOperator",
    "task_key",
]
