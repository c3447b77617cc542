"""What a batch leaves behind once its runs settled: each document's outputs, the manifest, the XCom summary,
and the metrics of the runs this try started (``airflow_flowruns.batch.counted``).

Documents are handled one at a time in key order and their manifest items spooled to a local temporary file,
so ten thousand documents cost a worker the same memory as ten. The manifest (``_MANIFEST.json``) is written
last, once every landing is done: a manifest present is a batch landed. XCom holds counts and at most
``LISTED_KEYS`` failed and review documents by key; the manifest holds them all.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import reduce
from typing import IO, TYPE_CHECKING, Any

from airflow_flowruns.batch.census import Census, Seen
from airflow_flowruns.batch.documents import BatchKeys, Document
from airflow_flowruns.exceptions import FlowRunsError, FlowRunTimeoutError
from airflow_flowruns.outputs.landing import LANDABLE, land_run
from airflow_flowruns.outputs.model import folder_name
from airflow_flowruns.platforms.base import RunState
from airflow_flowruns.platforms.usage import Usage
from airflow_flowruns.waiting import OnReview

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from airflow_flowruns.hooks.flow_run import FlowRunsHook

MANIFEST_NAME = "_MANIFEST.json"
MANIFEST_FORMAT = "airflow-flowruns/batch-manifest/1"
LISTED_KEYS = 100
"""Failed and review documents named in XCom, each list; the manifest names every one."""
HANDED_TO_REVIEW = 1024
"""The most documents in review one batch hands to its review task: Airflow's default ``max_map_length``."""
NOT_STARTED = "not_started"
"""The state of a document the manifest lists without a run: set aside (refused by the platform, or its start
failed however often tried; its status says why), or not reached before the deadline."""


@dataclass
class BatchResult:
    """The batch's outcome: counts by state and the documents that need a look, bounded."""

    documents: int
    counts: Counter[str] = field(default_factory=Counter)
    failed: list[str] = field(default_factory=list)
    review: list[str] = field(default_factory=list)
    manifest: str | None = None
    in_review: list[tuple[str, str]] = field(default_factory=list)
    """The first ``HANDED_TO_REVIEW`` documents in review, with their run ids."""
    usage: Usage | None = None
    """The documents' usage summed, each measure over the runs that report it."""

    def note(self, key: str, state: str, run_id: str | None = None) -> None:
        self.counts[state] += 1
        bad = state in (RunState.FAILED.value, RunState.CANCELLED.value, NOT_STARTED)
        listed = self.failed if bad else self.review if state == RunState.NEEDS_REVIEW.value else None
        if listed is not None and len(listed) < LISTED_KEYS:
            listed.append(key)
        if state == RunState.NEEDS_REVIEW.value and run_id and len(self.in_review) < HANDED_TO_REVIEW:
            self.in_review.append((key, run_id))

    def to_xcom(self, platform: str, flow_id: str, started: int) -> dict[str, Any]:
        return {
            "platform": platform,
            "flow_id": flow_id,
            "documents": self.documents,
            "counts": dict(self.counts),
            "started": started,
            "failed_documents": self.failed,
            "review_documents": self.review,
            "manifest": self.manifest,
            "usage": self.usage.to_json() if self.usage else None,
        }


DocumentSettled = Callable[[dict[str, Any]], None]
"""Called with each settled document's manifest item (the per-document asset event)."""
RunCounted = Callable[[str, Seen, Usage | None], None]
"""Called with each document's key, newest run and usage (the metrics: ``airflow_flowruns.batch.counted``)."""


@dataclass(frozen=True)
class Reporter:
    """Lands, lists and announces every document of a shard from its final census."""

    hook: FlowRunsHook
    flow_id: str
    census: Census
    outputs_to: ObjectStoragePath | None = None
    manifest_to: ObjectStoragePath | None = None
    settled: DocumentSettled | None = None
    refused: Mapping[str, str] = field(default_factory=dict)
    """Documents set aside without a run, with the reason where it is known."""
    counted: RunCounted | None = None
    """Counts each document's run in the metrics, where it is final and this try started it."""

    def report(self, documents: Iterable[Document], total: int) -> BatchResult:
        result = BatchResult(total)
        with tempfile.TemporaryFile("w+", encoding="utf-8") as spool:
            for doc in documents:
                seen = self.census.newest.get(self.census.keys.run_key(doc.key))
                item, usage = self._item(doc, seen)
                result.note(doc.key, item["state"], item["run_id"])
                result.usage = Usage.total((result.usage, usage))
                spool.write(json.dumps(item) + "\n")
                if self.settled is not None and item["run_id"] and RunState(item["state"]).is_final:
                    self.settled(item)
                if self.counted is not None and seen is not None:
                    self.counted(doc.key, seen, usage)
            target = self._manifest_target()
            if target is not None:
                spool.seek(0)
                _write_manifest(target, self.hook.platform.name, self.flow_id, result, spool)
                result.manifest = str(target)
        return result

    def _item(self, doc: Document, seen: Seen | None) -> tuple[dict[str, Any], Usage | None]:
        """The document's manifest item, and its run's usage: as the full run read for its landing says, else as
        the listing did. ``seen``: the document's newest run, None where it has none."""
        if seen is None:
            status = self.refused.get(doc.key)
            never = {"document_key": doc.key, "run_id": None, "state": NOT_STARTED, "status": status, "landing": None}
            return {**never, "usage": None}, None
        item: dict[str, Any] = {
            "document_key": doc.key,
            "run_id": seen.run_id,
            "state": seen.state.value,
            "status": seen.status,
            "landing": None,
        }
        usage = seen.usage
        if self.outputs_to is not None and seen.state in LANDABLE:
            run = self.hook.get_run(self.flow_id, seen.run_id)
            folder = reduce(lambda path, part: path / folder_name(part), doc.key.split("/"), self.outputs_to)
            item["landing"] = land_run(self.hook, run, self.outputs_to, folder=folder).path
            usage = run.usage or seen.usage
        return {**item, "usage": usage.to_json() if usage else None}, usage

    def _manifest_target(self) -> ObjectStoragePath | None:
        return manifest_target(self.outputs_to, self.manifest_to, self.census.keys)


def manifest_target(
    outputs_to: ObjectStoragePath | None, manifest_to: ObjectStoragePath | None, keys: BatchKeys
) -> ObjectStoragePath | None:
    """``manifest_to``, else ``_MANIFEST.json`` in ``outputs_to``: one per shard where shards share it."""
    if manifest_to is not None:
        return manifest_to
    if outputs_to is None:
        return None
    name = MANIFEST_NAME if keys.shard_count == 1 else f"_MANIFEST.shard-{keys.shard}-of-{keys.shard_count}.json"
    return outputs_to / name


def _write_manifest(
    target: ObjectStoragePath, platform: str, flow_id: str, result: BatchResult, items: IO[str]
) -> None:
    """The manifest as one JSON object, its items streamed from the spool."""
    head = {
        "format": MANIFEST_FORMAT,
        "platform": platform,
        "flow_id": flow_id,
        "documents": result.documents,
        "counts": dict(result.counts),
        "usage": result.usage.to_json() if result.usage else None,
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w") as out:
        out.write(json.dumps(head)[:-1] + ', "items": [')
        for number, line in enumerate(items):
            out.write(("," if number else "") + "\n" + line.rstrip("\n"))
        out.write("\n]}\n")


def judge(
    result: BatchResult, outcome: str, on_review: OnReview, max_failed: int | None, min_succeeded: int | None
) -> None:
    """Fail the task when the batch timed out, or the documents' outcomes break ``max_failed`` or
    ``min_succeeded``; documents in review count as ``on_review`` says."""
    counts = result.counts
    review = counts[RunState.NEEDS_REVIEW.value]
    failed = sum(counts[state] for state in (RunState.FAILED.value, RunState.CANCELLED.value, NOT_STARTED))
    failed += review if on_review is OnReview.FAIL else 0
    handed_on = on_review in (OnReview.SUCCEED, OnReview.AIRFLOW)  # to the downstream branch or review task
    succeeded = counts[RunState.SUCCEEDED.value] + (review if handed_on else 0)
    where = f" Every document is listed in {result.manifest}." if result.manifest else ""
    named = f" Failed: {', '.join(result.failed[:10])}." if result.failed else ""
    if outcome == "timeout":
        raise FlowRunTimeoutError(
            f"The batch's deadline passed with {result.documents - succeeded - failed} of {result.documents} "
            f"documents unsettled ({dict(counts)}).{where} A retry follows the runs still alive."
        )
    if max_failed is not None and failed > max_failed:
        raise FlowRunsError(
            f"{failed} of {result.documents} documents failed or were cancelled, over max_failed={max_failed}."
            f"{named}{where} A retry runs only those documents again."
        )
    if min_succeeded is not None and succeeded < min_succeeded:
        raise FlowRunsError(
            f"{succeeded} of {result.documents} documents succeeded, under min_succeeded={min_succeeded}.{named}{where}"
        )
