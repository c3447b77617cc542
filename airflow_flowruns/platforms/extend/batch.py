"""Extend's batch start, described but not performed: many runs of one workflow from one call, and the
listing that finds a batch's runs again.

Wire facts, each from the extend-ai 1.20.0 SDK (``extend_ai/``):

* ``POST /workflow_runs/batch`` (``workflow_runs/raw_client.py``, ``create_batch``) takes ``workflow`` (a
  ``WorkflowReference``: ``id``, optional ``version``), ``inputs`` and an optional ``priority``. Each input
  (``workflow_runs/requests/workflow_runs_create_batch_request_inputs_item.py``) is a ``file`` (``FileFromUrl``
  ``{url, name?}``, ``FileFromId`` ``{id}`` or ``FileFromText``) with optional ``metadata`` and ``secrets``.
* One call takes 1 to 1,000 inputs (``create_batch``'s docstring, which recommends the call for bulk runs of
  more than 1,000 files); more documents are more calls, each its own batch.
* The answer (``workflow_runs/types/workflow_runs_create_batch_response.py``) is ``batchId`` and nothing
  else: no run ids. A batch's runs are found by listing them: ``GET /workflow_runs`` filters on ``batchId``
  (``list``), and ``WorkflowRunSummary`` (``types/workflow_run_summary.py``) and ``WorkflowRun`` both carry it.
* An input's ``metadata`` becomes its run's metadata. The provider puts the task key and the document key
  there, so a run read in full says which task started it for which document; list items carry no metadata.
  Its limit is taken to be a single run's 10 KB (``../shared/api-notes.md``; the SDK states none). The usage
  tags naming the DAG and task go there too, as on a single run (``usage.py``).
* Unconfirmed, and chosen here: a batch's runs are listed as soon as its call returns (neither the SDK nor
  the reference pages mention a delay). After a batch call of unknown outcome, a run of any of its documents
  created since the call began means Extend took the batch; none means it did not, and the call is sent again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from airflow_flowruns.exceptions import FlowRunsConfigError, FlowRunsResponseError
from airflow_flowruns.platforms.base import ApiCall, FlowRun, RunQuery, RunsPage
from airflow_flowruns.platforms.extend.api import MAX_INPUTS_PER_CALL, MAX_PAGE_SIZE, METADATA_LIMIT_BYTES, Extend
from airflow_flowruns.platforms.start import DOCUMENT_KEY_FIELD, TASK_KEY_FIELD
from airflow_flowruns.platforms.values import repeated

BATCH_PATH = "/workflow_runs/batch"
RUNS_PATH = "/workflow_runs"


@dataclass(frozen=True)
class BatchInput:
    """One document of a batch: its file, by Extend file id or by URL, and the key that names it in the run's
    metadata. ``name`` goes with a URL only (``FileFromUrl.name``; ``FileFromId`` has none). ``task_key``: the
    key this input's run carries, where each document's run has its own; None: the call's."""

    document_key: str
    file_id: str | None = None
    url: str | None = None
    name: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    task_key: str | None = None

    def __post_init__(self) -> None:
        if not self.document_key:
            raise FlowRunsConfigError("Each document of an Extend batch needs a non-empty document key.")
        if (self.file_id is None) == (self.url is None):
            raise FlowRunsConfigError(
                f"Document {self.document_key!r} must give its file either by Extend file id or by URL, not "
                f"{'both' if self.file_id is not None else 'neither'}."
            )
        if self.name is not None and self.url is None:
            raise FlowRunsConfigError(
                f"Document {self.document_key!r} names its file, which Extend takes only with a URL: drop the name."
            )

    def file(self) -> dict[str, str]:
        """The input's ``file``: ``FileFromId`` or ``FileFromUrl``."""
        if self.file_id is not None:
            return {"id": self.file_id}
        return {"url": str(self.url), **({"name": self.name} if self.name else {})}

    def wire(self, task_key: str) -> dict[str, Any]:
        """The input as the call sends it; its metadata carries the task key and the document key."""
        metadata = {**self.metadata, TASK_KEY_FIELD: self.task_key or task_key, DOCUMENT_KEY_FIELD: self.document_key}
        size = len(json.dumps(metadata).encode())
        if size > METADATA_LIMIT_BYTES:
            raise FlowRunsConfigError(
                f"The metadata of document {self.document_key!r} is {size} bytes as JSON; Extend accepts at most "
                f"{METADATA_LIMIT_BYTES}. Keep large data out of the run metadata."
            )
        return {"file": self.file(), "metadata": metadata}


def batch_calls(
    workflow_id: str, inputs: Sequence[BatchInput], task_key: str, *, version: str | None = None
) -> list[ApiCall]:
    """The calls that start one run of ``workflow_id`` per input, at most ``MAX_INPUTS_PER_CALL`` inputs each.

    Every input is checked before the first call is built, so a bad one never leaves part of the documents
    started. The calls are not idempotent: each starts runs, so it is retried only where Extend certainly
    did not get it.
    """
    if not workflow_id:
        raise FlowRunsConfigError("An Extend batch needs the workflow id to run the documents through.")
    if not inputs:
        raise FlowRunsConfigError("An Extend batch needs at least one document.")
    repeated_keys = repeated(item.document_key for item in inputs)
    if repeated_keys:
        raise FlowRunsConfigError(
            f"Document keys must be unique within a batch, and {', '.join(map(repr, repeated_keys))} appear more "
            "than once: give each document its own key."
        )
    workflow = {"id": workflow_id, **({"version": version} if version else {})}
    wired = [item.wire(task_key) for item in inputs]
    return [
        ApiCall("start batch", "POST", BATCH_PATH, json={"workflow": workflow, "inputs": chunk}, idempotent=False)
        for chunk in (wired[i : i + MAX_INPUTS_PER_CALL] for i in range(0, len(wired), MAX_INPUTS_PER_CALL))
    ]


class BatchCreated(BaseModel):
    """The answer to ``POST /workflow_runs/batch``: the SDK's ``WorkflowRunsCreateBatchResponse``."""

    model_config = ConfigDict(extra="ignore")

    batchId: str = Field(min_length=1)


@dataclass(frozen=True)
class StartedBatch:
    """A batch Extend accepted: its id, and the documents its call carried, in the order sent."""

    batch_id: str
    document_keys: tuple[str, ...]


def parse_batch_created(platform: Extend, body: Any, call: ApiCall) -> StartedBatch:
    """The batch ``call`` started, from Extend's answer to it."""
    answer = platform.parse_model(BatchCreated, body, "batch start answer")
    keys = tuple(item["metadata"][DOCUMENT_KEY_FIELD] for item in call.json["inputs"])
    return StartedBatch(answer.batchId, keys)


def batch_id_of(run: FlowRun) -> str | None:
    """The ``batchId`` a run or a list item carries (``WorkflowRun``, ``WorkflowRunSummary``); None outside a batch."""
    value = run.raw.get("batchId")
    return value if isinstance(value, str) else None


def document_key_of(run: FlowRun) -> str | None:
    """The document a batch run was started for; only a run read in full has metadata (not a list item)."""
    value = run.metadata.get(DOCUMENT_KEY_FIELD)
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class BatchRunsListing:
    """The runs of one batch: ``GET /workflow_runs`` filtered on ``batchId``, oldest first, largest pages.

    Sorted by ``createdAt``, which never changes: the batch's runs change status while they are listed, and
    by ``updatedAt`` (the listing's default) a run that changes between two pages would move from one page
    to another, read twice or never. Each page is ``Extend.parse_runs_page``'s; a page listing another
    batch's run means the filter was not applied, and is refused rather than taken for this batch's.
    """

    platform: Extend
    batch_id: str

    def first_call(self) -> ApiCall:
        params = {"batchId": self.batch_id, "sortBy": "createdAt", "sortDir": "asc", "maxPageSize": MAX_PAGE_SIZE}
        return ApiCall("list batch runs", "GET", RUNS_PATH, params=params)

    def parse_page(self, body: Any, call: ApiCall) -> RunsPage:
        page = self.platform.parse_runs_page(body, call, RunQuery())
        strays = [run.id for run in page.runs if batch_id_of(run) != self.batch_id]
        if strays:
            raise FlowRunsResponseError(
                f"Extend listed runs outside batch {self.batch_id!r} ({', '.join(strays[:3])}) when asked for "
                "that batch's runs: the API did not apply the batchId filter. Check the connection's host and "
                "its api_version extra."
            )
        return page
