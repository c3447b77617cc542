"""Land a finished run's outputs in object storage (see ``airflow_flowruns.outputs.landing``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator, ObjectStoragePath

from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.operators._connection import FlowRunsConnectionMixin
from airflow_flowruns.operators._outputs import output_target
from airflow_flowruns.outputs.landing import Landing, land_run
from airflow_flowruns.platforms.base import FlowRun
from airflow_flowruns.platforms.values import require_text

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context
    from airflow.providers.openlineage.extractors import OperatorLineage


class FlowRunOutputsOperator(FlowRunsConnectionMixin, BaseOperator):
    """Read one run and land its outputs under ``{destination}/{platform}/{flow_id}/{run_id}/``.

    The run is read afresh (its full object, with the outputs a review may have changed), so this works
    right after ``FlowRunOperator``, from a run id, or from a
    ``FlowRunEventTrigger`` event. Landing the same run again
    writes nothing unless the run changed. Returns paths, counts and bytes (``Landing.to_xcom``).

    :param run: the run: its id, or a mapping with ``id`` or ``run_id`` and optionally ``flow_id``, such as
        ``FlowRunOperator``'s return value or a watcher event's payload (``triggering_asset_events``).
        Templated; with a template, ``render_template_as_native_obj=True`` on the DAG keeps a mapping a mapping.
    :param destination: folder or URI the landing goes under (``/data/out``, ``s3://bucket/runs``, ...). Templated.
    :param flowruns_conn_id: connection of the run's platform; without one, the default connection, as for
        ``FlowRunOperator``.
    :param flow_id: the run's flow, where the mapping does not name it (needed on StackAI). Templated.
    """

    template_fields: Sequence[str] = ("run", "destination", "flowruns_conn_id", "flow_id")
    ui_color = "#e6f7ec"

    def __init__(
        self,
        *,
        run: str | Mapping[str, Any],
        destination: str | ObjectStoragePath,
        flowruns_conn_id: str | None = None,
        flow_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.run = run
        self.destination = destination
        self.flowruns_conn_id = flowruns_conn_id
        self.flow_id = flow_id
        self._landed: tuple[FlowRun, Landing] | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        flow_id, run_id = run_reference(self.run, self.flow_id)
        destination = landing_destination(self.destination)
        hook = self.hook
        run = hook.get_run(flow_id, run_id)
        landing = land_run(hook, run, destination)
        self._landed = (run, landing)
        return landing.to_xcom()

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage[Any, Any]:
        from airflow_flowruns.lineage import outputs_lineage

        run, landing = self._landed or (None, None)  # nothing landed: no dataset, and no connection read
        return outputs_lineage(self.hook, run, landing)


def run_reference(run: Any, flow_id: Any = None) -> tuple[str | None, str]:
    """(flow id, run id) from a run id or a mapping naming the run, checked before any call."""
    if isinstance(run, Mapping):
        run_id = run.get("id") or run.get("run_id")
        flow_id = flow_id or run.get("flow_id")
    elif isinstance(run, str):
        run_id = run
    else:
        raise FlowRunsConfigError(
            f"run must be a run id or a mapping with its id (FlowRunOperator's result, a watcher event), "
            f"not {type(run).__name__}."
        )
    return (str(flow_id).strip() or None) if flow_id else None, require_text(run_id, "run id")


def landing_destination(destination: Any) -> ObjectStoragePath:
    target = output_target(destination, "destination")
    if target is None:
        raise FlowRunsConfigError("destination is empty; give the folder or URI outputs are landed under.")
    return target
