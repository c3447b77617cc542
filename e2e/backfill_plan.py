"""The documents of ``make e2e-backfill`` and what the platform does with their runs.

Every document has a fate, drawn at random but tolerated by its task's rules in a known way: most succeed,
some fail once (their first run fails on the platform, the run a retry starts succeeds), on Noxus a few fail
every time, and on TableFlow a few stop for review. One flow serves all documents of a task, so the
platform's side is played by :class:`OutcomeScript`: it watches the emulator's runs and forces the status of
each run the plan says fails or stops for review, through the emulator's control API, seconds before the
scripted processing would have completed it.

A run is matched to its document by the ``airflow_document_key`` of its metadata, or, where the emulator
keeps no metadata (Noxus), by its upload's name, ``<run key>~<file name>``; every file name is unique
across the plan.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from airflow_flowruns.platforms import emulator_parts
from airflow_flowruns.platforms.start import DOCUMENT_KEY_FIELD, KEY_NAME_SEPARATOR, TASK_KEY_FIELD, key_in_name
from e2e.dags.flowruns_backfill_e2e import TASKS, BatchTask
from e2e.retry_rule import ENDED, phase_of

FAIL_ONCE_SHARE = 0.04
"""Documents of each task whose first run fails (at least one more than the task's ``max_failed``)."""
REVIEW_SHARE = 0.015
DOOMED_ON = "noxus"
"""The platform whose task also has documents that fail on every try: one more than its ``max_failed``."""
REVIEW_ON = "tableflow"
FORCED_ERROR = "Extraction failed: the e2e plan says so"


@dataclass(frozen=True)
class Document:
    platform: str
    key: str
    """The document key the batch operator is expected to give it."""
    file_name: str
    fate: str
    """succeed, fail_once, doomed or review."""

    def forced_phase(self, first_run: bool) -> str | None:
        """The phase the platform puts one of its runs in, or None: the flow's scenario decides (completed)."""
        if self.fate == "doomed" or (self.fate == "fail_once" and first_run):
            return "failed"
        return "review" if self.fate == "review" else None

    @property
    def final_phase(self) -> str:
        return {"doomed": "failed", "review": "review"}.get(self.fate, "completed")


@dataclass
class Plan:
    documents: list[Document]
    conf: dict[str, dict[str, Any]]
    """The DAG run's conf: per platform, its documents and where outputs or the manifest go."""
    outputs: Path
    by_key: dict[tuple[str, str], Document] = field(init=False)
    by_file: dict[tuple[str, str], Document] = field(init=False)

    def __post_init__(self) -> None:
        self.by_key = {(doc.platform, doc.key): doc for doc in self.documents}
        self.by_file = {(doc.platform, doc.file_name): doc for doc in self.documents}

    def of(self, platform: str) -> list[Document]:
        return [doc for doc in self.documents if doc.platform == platform]

    def document_of(self, summary: Mapping[str, Any]) -> Document | None:
        """The document a run (the emulator's summary of it) is for: by its metadata, else by its upload's name."""
        platform = summary["platform"]
        key = (summary.get("metadata") or {}).get(DOCUMENT_KEY_FIELD)
        if key is not None:
            return self.by_key.get((platform, key))
        for name in upload_names(summary):
            _, separator, own_name = name.partition(KEY_NAME_SEPARATOR)
            if separator and (platform, own_name) in self.by_file:
                return self.by_file[(platform, own_name)]
        return None


def upload_names(summary: Mapping[str, Any]) -> list[str]:
    return [str(upload.get("filename")) for upload in summary.get("uploads") or []]


def run_keys(summary: Mapping[str, Any]) -> set[str]:
    """Every run key a run carries: in its metadata and in its uploads' names (all must agree)."""
    keys = {key_in_name(name) for name in upload_names(summary)}
    keys.add((summary.get("metadata") or {}).get(TASK_KEY_FIELD))
    return {key for key in keys if key}


def make_plan(root: Path, total: int, rng: random.Random) -> Plan:
    """Write ``total`` small PDFs split over the tasks, each task's its own way, and draw every document's fate."""
    data, outputs = root / "data", root / "outputs"
    documents: list[Document] = []
    conf: dict[str, dict[str, Any]] = {}
    for position, batch in enumerate(TASKS):
        count = total // len(TASKS) + (1 if position < total % len(TASKS) else 0)
        folder = data / batch.platform
        placed = [_place(folder, batch.platform, index) for index in range(count)]
        fates = _fates(batch, count, rng)
        for (path, key), fate in zip(placed, fates, strict=True):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"%PDF-1.4\n% e2e backfill document " + key.encode() + b"\n%%EOF\n")
            documents.append(Document(batch.platform, key, path.name, fate))
        conf[batch.platform] = _documents_argument(batch, folder, placed)
        if batch.lands_outputs:
            conf[batch.platform]["outputs_to"] = str(outputs / batch.platform)
        else:
            conf[batch.platform]["manifest_to"] = str(outputs / batch.platform / "_MANIFEST.json")
    return Plan(documents, conf, outputs)


def _place(folder: Path, platform: str, index: int) -> tuple[Path, str]:
    """Where a document's file goes and the key the operator should give it (relative path, or the list's key)."""
    if platform == "tableflow":  # a folder: every file below it, keyed by its path relative to the folder
        relative = f"{2020 + index % 4}/{index % 12 + 1:02d}/tf-{index:04d}.pdf"
        return folder / relative, relative
    if platform == "extend":  # a glob: keyed by the path relative to the glob's folder
        relative = f"box-{index % 5}/ex-{index:04d}.pdf"
        return folder / relative, relative
    return folder / f"nx-{index:04d}.pdf", f"noxus-doc-{index:04d}"


def _documents_argument(batch: BatchTask, folder: Path, placed: list[tuple[Path, str]]) -> dict[str, Any]:
    if batch.platform == "tableflow":
        return {"documents": f"{folder}/"}
    if batch.platform == "extend":
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "box-0").mkdir(exist_ok=True)
        (folder / "box-0" / "notes.txt").write_text("not a PDF: the glob leaves it out\n")
        return {"documents": f"{folder}/**/*.pdf"}
    items: list[dict[str, Any]] = [{"files": {batch.file_field: str(path)}, "key": key} for path, key in placed]
    if batch.keeps_metadata:
        for item in items:
            item["metadata"] = {"e2e_item": item["key"]}
    return {"documents": items}


def _fates(batch: BatchTask, count: int, rng: random.Random) -> list[str]:
    fates = ["succeed"] * count
    special = {"fail_once": max(batch.max_failed + 1, round(count * FAIL_ONCE_SHARE))}
    if batch.platform == DOOMED_ON:
        special["doomed"] = batch.max_failed + 1
    if batch.platform == REVIEW_ON:
        special["review"] = max(1, round(count * REVIEW_SHARE))
    chosen = rng.sample(range(count), min(count, sum(special.values())))
    for fate, how_many in special.items():
        for index in chosen[:how_many]:
            fates[index] = fate
        chosen = chosen[how_many:]
    return fates


@functools.cache
def raw_statuses() -> dict[str, dict[str, str]]:
    """Phase to raw status per platform, as the emulator names them."""
    return {m.PLATFORM: dict(m.STATUSES) for m in emulator_parts()}


class OutcomeScript(threading.Thread):
    """Forces, through the emulator's control API, the status the plan gives each new run of a document."""

    def __init__(self, emulator: httpx.Client, plan: Plan, interval: float = 0.5) -> None:
        super().__init__(name="outcome-script", daemon=True)
        self.emulator = emulator
        self.plan = plan
        self.interval = interval
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.forced: dict[str, str] = {}
        """Run id to the phase forced on it."""
        self.late: list[str] = []
        """Runs that had ended before their forced status could be set: the plan could not be played."""
        self.runs_per_document: Counter[tuple[str, str]] = Counter()
        self._seen: set[str] = set()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                self.play()
                time.sleep(self.interval)
        except BaseException as exc:
            self.error = exc

    def play(self) -> None:
        """Force the statuses of the runs created since the last call (one listing only when there are some)."""
        if self.emulator.get("/stats").json()["runs"] == len(self._seen):
            return
        for summary in self.emulator.get("/runs").json():
            if summary["id"] not in self._seen:
                self._seen.add(summary["id"])
                self._force(summary)

    def _force(self, summary: Mapping[str, Any]) -> None:
        document = self.plan.document_of(summary)
        if document is None:
            return
        ref = (document.platform, document.key)
        self.runs_per_document[ref] += 1
        phase = document.forced_phase(first_run=self.runs_per_document[ref] == 1)
        if phase is None:
            return
        if phase_of(summary["platform"], summary["status"]) in ENDED:
            self.late.append(summary["id"])
            return
        body = {"status": raw_statuses()[document.platform][phase]}
        if phase == "failed":
            body["error"] = FORCED_ERROR
        self.emulator.post(f"/runs/{summary['id']}/status", json=body).raise_for_status()
        self.forced[summary["id"]] = phase
