"""OpenLineage for ``FlowRunOperator``: the uploaded files in, the flow run out.

It takes the operators' plain values (connection id, files, flow id, settled run, landing), never an operator,
so it depends on no operator module.

Imported only when the OpenLineage provider asks the operator for its facets, so without
``apache-airflow-providers-openlineage`` installed nothing here is ever loaded.

Names follow OpenLineage's dataset naming spec: a local file is namespace ``file`` with its absolute path
as name, ``s3://`` and ``gs://`` objects are namespace ``s3://bucket`` / ``gs://bucket`` with the key as
name, other object stores ``scheme://authority`` with the path; the Airflow connection id a path may
name (``s3://aws_default@bucket/...``) is left out. The run is an output dataset in namespace
``{platform}://{API host}`` named after the flow, carrying a ``flowRun`` facet (run id, final state); the
run id is also the job run's standard ``externalQuery`` facet, and what the run consumed, where its platform
reports it, the job run's ``flowRunUsage`` facet (credits, pages, tokens).

Landed outputs (``outputs_to``, ``FlowRunOutputsOperator``) are one more output dataset: the run's
landing folder, named like any stored file by the storage it is on (``file`` and the absolute path,
``s3://bucket`` and the key, ...). For ``FlowRunOutputsOperator`` the flow run is the input it
read and the landing folder its output.

In deferrable mode the task that resumes is not the one that uploaded, so globs and folders are listed
again when lineage is read; a file removed meanwhile drops out of the inputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import ObjectStoragePath
from attrs import define
from openlineage.client.event_v2 import Dataset
from openlineage.client.facet_v2 import DatasetFacet, RunFacet, external_query_run
from openlineage.client.naming.dataset import GCS, S3, LocalFileSystem

from airflow_flowruns.files import FileArgument, collect_files, file_uri
from airflow_flowruns.hooks.flow_run import FlowRunsHook

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_flowruns.outputs.landing import Landing
    from airflow_flowruns.platforms.base import FlowRun


@define
class FlowRunDatasetFacet(DatasetFacet):
    """The run that produced this output: where to find it and how it ended."""

    platform: str
    runId: str
    flowId: str | None
    state: str
    status: str
    url: str | None

    @staticmethod
    def _get_schema() -> str:
        return "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/DatasetFacet"


@define
class FlowRunUsageRunFacet(RunFacet):
    """What the flow run consumed, as its platform reports it; a measure it reports not is left out."""

    platform: str
    credits: float | None
    pages: int | None
    tokens: int | None


def flow_run_lineage(
    hook: FlowRunsHook,
    files: Mapping[str, FileArgument] | None,
    flow_id: str,
    run: FlowRun | None,
    landing: Landing | None,
) -> OperatorLineage[Dataset, Any]:
    """``FlowRunOperator``: the files given in; the settled run (``None``: the task failed before a run
    existed) and the folder its outputs landed in, if they did, out."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    collected = collect_files(files, check=False).values()
    inputs = [
        file_dataset(file_uri(path))
        for value in collected
        for path in (value if isinstance(value, tuple) else (value,))
    ]
    if run is None:  # failed before a run existed: only what it was given
        return OperatorLineage(inputs=inputs)
    outputs = [run_dataset(hook, run, flow_id)]
    if landing is not None:
        outputs.append(landing_dataset(landing))
    return OperatorLineage(inputs=inputs, outputs=outputs, run_facets={**_external_query(run), **_usage(run)})


def outputs_lineage(hook: FlowRunsHook, run: FlowRun | None, landing: Landing | None) -> OperatorLineage[Dataset, Any]:
    """``FlowRunOutputsOperator``: the flow run in, its landing folder out; nothing before both exist."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    if run is None or landing is None:
        return OperatorLineage()
    return OperatorLineage(
        inputs=[run_dataset(hook, run, run.flow_id or "")],
        outputs=[landing_dataset(landing)],
        run_facets=_external_query(run),
    )


def run_dataset(hook: FlowRunsHook, run: FlowRun, flow_id: str) -> Dataset:
    """The flow run as a dataset: namespace ``{platform}://{API host}`` (the host of the connection the task
    used), named after the flow."""
    host = urlsplit(hook.platform.settings.base_url).netloc
    return Dataset(
        namespace=f"{run.platform}://{host}",
        name=run.flow_id or flow_id,
        facets={
            "flowRun": FlowRunDatasetFacet(
                platform=run.platform,
                runId=run.id,
                flowId=run.flow_id,
                state=run.state.value,
                status=run.status,
                url=run.url,
            )
        },
    )


def landing_dataset(landing: Landing) -> Dataset:
    """The landing folder, named per the OpenLineage naming spec for the storage it is on."""
    return file_dataset(storage_uri(ObjectStoragePath(landing.path)))


def storage_uri(path: ObjectStoragePath) -> str:
    """A URI for a stored path: ``file:///...`` for local paths, which ObjectStoragePath leaves bare."""
    if path.protocol in ("", "file", "local"):
        return f"file://{path.path}"
    return str(path)


def _external_query(run: FlowRun) -> dict[str, Any]:
    return {"externalQuery": external_query_run.ExternalQueryRunFacet(externalQueryId=run.id, source=run.platform)}


def _usage(run: FlowRun) -> dict[str, Any]:
    """The ``flowRunUsage`` run facet, where the platform reports usage: the cost is the job run's, not the flow's."""
    if run.usage is None:
        return {}
    return {"flowRunUsage": FlowRunUsageRunFacet(platform=run.platform, **run.usage.model_dump())}


def file_dataset(uri: str) -> Dataset:
    """A stored file or folder as OpenLineage names it. The Airflow connection id that object storage paths
    may carry (``s3://aws_default@bucket/key``) is how Airflow reaches the bucket, not part of its name."""
    parts = urlsplit(uri)
    authority = parts.netloc.rpartition("@")[2]
    naming: Any
    if parts.scheme == "file":
        naming = LocalFileSystem(path=parts.path)
    elif parts.scheme == "s3":
        naming = S3(bucket_name=authority, object_key=parts.path.lstrip("/"))
    elif parts.scheme in ("gs", "gcs"):
        naming = GCS(bucket_name=authority, object_key=parts.path.lstrip("/"))
    else:
        return Dataset(namespace=f"{parts.scheme}://{authority}", name=parts.path.lstrip("/"))
    return Dataset(namespace=naming.get_namespace(), name=naming.get_name())
