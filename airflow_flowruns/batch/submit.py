"""Start each document of a batch at most once: decide what a try does with each, then start what it must.

Each document follows the retry rule of ``FlowRunOperator`` (``airflow_flowruns.starting``): its run is
followed while alive or succeeded, re-run when it failed or was cancelled before this try began, and
started when it has none. Runs are started at the connection's pace (its request scheduler spaces every
call), one call per document, or one call per ``Platform.batch_inputs`` documents where the platform has a
batch start (Extend). Every start is noted in the ledger before its call and confirmed after it; a start
whose outcome is unknown is looked up by run key before it is sent again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from airflow_flowruns.batch.census import Census, take_census
from airflow_flowruns.batch.documents import BatchKeys, Document
from airflow_flowruns.batch.ledger import PAGE_DOCUMENTS, Ledger, LedgerView
from airflow_flowruns.batch.progress import PROGRESS_EVERY_SECONDS
from airflow_flowruns.exceptions import (
    FlowRunsApiError,
    FlowRunsConfigError,
    FlowRunsError,
    FlowRunsResponseError,
    is_transient,
)
from airflow_flowruns.platforms.batching import BatchDocument
from airflow_flowruns.platforms.start import DOCUMENT_KEY_FIELD, keyed_name
from airflow_flowruns.starting import RESTART_STATES, START_ATTEMPTS, TaskTry, start_unambiguously

if TYPE_CHECKING:
    from airflow_flowruns.hooks.flow_run import FlowRunsHook
    from airflow_flowruns.platforms.start import FilePath, StartRequest

REFUSAL_STATUSES = frozenset({400, 413, 415, 422})
"""Answers that refuse one document (its file, its metadata) rather than the batch: the other documents go on."""
MISSES_BEFORE_GIVING_UP = 10
"""Documents set aside in a row (refused, or never started however often tried) after which the execution
fails: the cause is then the task's or the platform's (its metadata, an outage), not each document's."""
URL_SECONDS = 24 * 60 * 60
"""How long a presigned document URL stays valid: a day, longer than a batch waits in a platform's queue."""


@dataclass
class Plan:
    """What this try does: the documents to start, and how many it follows or re-runs."""

    to_start: list[Document] = field(default_factory=list)
    following: int = 0
    rerunning: int = 0
    refused: int = 0
    earlier: dict[str, str] = field(default_factory=dict)
    """Document key to the failed or cancelled run its start replaces: a lookup after an ambiguous start
    looks only at runs newer than it."""


def plan_try(
    documents: Sequence[Document],
    keys: BatchKeys,
    view: LedgerView,
    census: Census | None,
    rerun_before: datetime | None,
) -> Plan:
    """Each document's fate. ``rerun_before``: a failed or cancelled run created before it is re-run (the
    try's start); None re-runs none (a resume within a try follows what it started, failures included)."""
    plan = Plan()
    for doc in documents:
        seen = census.newest.get(keys.run_key(doc.key)) if census is not None else None
        if seen is None and doc.key in view.refused and rerun_before is None:
            plan.refused += 1  # refused earlier in this try: a new try sends it again
        elif seen is None and doc.key not in view.started:
            plan.to_start.append(doc)
        elif seen is not None and seen.state in RESTART_STATES and _before(seen.created_at, rerun_before):
            plan.to_start.append(doc)
            plan.earlier[doc.key] = seen.run_id
            plan.rerunning += 1
        else:
            plan.following += 1
    return plan


def _before(created: datetime | None, limit: datetime | None) -> bool:
    return limit is not None and (created is None or created < limit)


@dataclass(frozen=True)
class Submission:
    """Everything starting needs besides the documents: where, as whom, with what."""

    hook: FlowRunsHook
    template: StartRequest
    keys: BatchKeys
    ledger: Ledger
    task_try: TaskTry
    pass_by_url: bool = False
    earlier: Mapping[str, str] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    """Set when the task is killed: no start is sent after it."""
    refused: dict[str, str] = field(default_factory=dict)
    """Documents set aside without a run (refused, or never started however often tried), with the reason."""
    started: list[str] = field(default_factory=list)
    _misses: list[str] = field(default_factory=list)

    def start(self, documents: Sequence[Document]) -> int:
        """Start ``documents``; how many runs were started (or, in batches, asked for); the platform's
        refusals are in ``refused``."""
        before = len(self.started)
        size = self.hook.platform.batch_inputs or PAGE_DOCUMENTS
        start = self._start_batch if self.hook.platform.batch_inputs else self._start_singly
        said = time.monotonic()
        for first in range(0, len(documents), size):
            start(documents[first : first + size])
            if time.monotonic() - said >= PROGRESS_EVERY_SECONDS:
                said = time.monotonic()
                done = min(first + size, len(documents))
                self.task_try.log.info(
                    "Started %d of %d documents; %d answers 429.",
                    done,
                    len(documents),
                    self.hook.client.limited_answers,
                )
        return len(self.started) - before

    def _start_singly(self, documents: Sequence[Document]) -> None:
        pages = self.ledger.note(doc.key for doc in documents)
        runs: dict[str, str] = {}
        try:
            for doc in documents:
                self._check_stop()
                run_key = self.keys.run_key(doc.key)
                request = self.request(doc, run_key)
                try:
                    run = start_unambiguously(self.hook, request, run_key, self.task_try, self.earlier.get(doc.key))
                except FlowRunsError as exc:
                    self._set_aside([doc.key], exc)
                    continue
                runs[doc.key] = run.id
                self._started([doc.key])
        finally:
            self.ledger.confirm(pages, runs, self.refused)

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise FlowRunsError("The task was stopped while starting documents; a retry resumes where it stopped.")

    def _started(self, keys: list[str]) -> None:
        self.started.extend(keys)
        self._misses.clear()

    def _set_aside(self, keys: list[str], exc: FlowRunsError) -> None:
        """Leave documents without a run and go on: the platform refused them (``REFUSAL_STATUSES``, a check of
        their file), or their start failed however often it was tried. Anything else, or too many in a row,
        fails the execution: a retry resumes."""
        refused = isinstance(exc, FlowRunsConfigError) or (
            isinstance(exc, FlowRunsApiError) and exc.status in REFUSAL_STATUSES
        )
        if not refused and not (exc.outcome_unknown or is_transient(exc)):
            raise exc
        self._misses.extend(keys)
        if len(self._misses) >= MISSES_BEFORE_GIVING_UP:
            raise exc
        self.task_try.log.warning("Set aside %s, the others go on: %s", ", ".join(keys), exc)
        self.refused.update(dict.fromkeys(keys, str(exc)))

    def request(self, doc: Document, run_key: str) -> StartRequest:
        """The start of one document: its files (named by key where the platform finds runs so), the task's
        metadata with the document's, and the run key."""
        platform = self.hook.platform
        files = doc.keyed_files(run_key) if platform.keyed_file_names else doc.files
        metadata = {**self.template.metadata, **doc.metadata}
        if platform.takes_metadata:
            metadata[DOCUMENT_KEY_FIELD] = doc.key
        return replace(self.template, files=files, metadata=metadata, task_key=run_key)

    def _start_batch(self, documents: Sequence[Document]) -> None:
        self._check_stop()
        pages = self.ledger.note(doc.key for doc in documents)
        batch = [self._batch_document(doc) for doc in documents]
        keys = [doc.key for doc in documents]
        try:
            batch_id = self._send_batch(batch)
        except FlowRunsError as exc:
            self._set_aside(keys, exc)
            self.ledger.confirm(pages, {}, self.refused)
            return
        self.task_try.log.info("Started batch %s of %d documents.", batch_id or "(accepted)", len(batch))
        self.ledger.confirm(pages, dict.fromkeys(keys, ""), {})
        self._started(keys)

    def _send_batch(self, batch: Sequence[BatchDocument]) -> str | None:
        """Send one batch call; after an ambiguous failure look its runs up, and send it again only when none
        exists, at most ``START_ATTEMPTS`` times. The batch id, or None where the lookup found it accepted."""
        began = datetime.now().astimezone()
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                return self.hook.start_batch(
                    self.template.flow_id,
                    batch,
                    self.template.flow_version,
                    self.template.metadata,
                    self.task_try.started_by,
                )
            except (FlowRunsApiError, FlowRunsResponseError) as exc:
                if not exc.outcome_unknown:
                    raise
                if self._accepted(batch, began):
                    self.task_try.log.info("The platform had accepted the batch despite %s.", exc)
                    return None
                if attempt == START_ATTEMPTS:
                    raise
                self.task_try.log.warning("Starting a batch failed (%s) and none of its runs exists; again.", exc)
        raise AssertionError("unreachable")  # pragma: no cover

    def _accepted(self, batch: Sequence[BatchDocument], began: datetime) -> bool:
        """After a batch start of unknown outcome: whether any of its documents has a run created since."""
        census = take_census(self.hook, self.template.flow_id, self.keys, self.task_try.runs_since)
        return any(
            (seen := census.newest.get(doc.run_key)) is not None and not _before(seen.created_at, began)
            for doc in batch
        )

    def _batch_document(self, doc: Document) -> BatchDocument:
        run_key = self.keys.run_key(doc.key)
        path = doc.only_file()
        if self.pass_by_url:
            return BatchDocument(run_key, doc.key, url=presigned_url(path), name=keyed_name(run_key, path.name))
        (keyed,) = doc.keyed_files(run_key).values()
        assert not isinstance(keyed, tuple)
        return BatchDocument(run_key, doc.key, path=keyed)


def presigned_url(path: FilePath) -> str:
    """A URL the platform fetches the document from, so its bytes never pass through the worker."""
    fs = getattr(path, "fs", None)
    try:
        if fs is None:
            raise NotImplementedError
        return str(fs.sign(getattr(path, "path", str(path)), expiration=URL_SECONDS))
    except NotImplementedError:
        raise FlowRunsConfigError(
            f"pass_by_url=True needs documents on object storage that presigns URLs (s3://, gs://, ...), and "
            f"{str(path)!r} is not: drop pass_by_url to upload the documents."
        ) from None
