"""The checks of ``make e2e-backfill``, on the emulator's record of every run and on what Airflow kept.

Per document: its runs (matched as :mod:`e2e.backfill_plan` says) keep the retry rule (never two alive at
once, never two succeeded, a later run only after a failed or cancelled one), number exactly what its fate
allows, carry one run key, and the newest ended as the plan made it. Per task: the manifest has one item
per document, each naming that document's newest run and its state as the emulator has them; the counts of
the manifest and of the XCom summary are those of the plan; the task's state is what ``min_succeeded`` and
``max_failed`` make of those counts; its first try ended as the plan made it, and its last try re-ran
exactly the documents whose runs had failed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.backfill_plan import Document, Plan, run_keys
from e2e.dags.flowruns_backfill_e2e import BatchTask
from e2e.harness import Outcome, counts
from e2e.retry_rule import ENDED, Run, retry_problems, run_of

MANIFEST_FORMAT = "airflow-flowruns/batch-manifest/1"
STATE_OF_PHASE = {"completed": "succeeded", "failed": "failed", "cancelled": "cancelled", "review": "needs_review"}
"""The manifest's state of a document whose newest run is in each emulator phase."""
SUMMARY_LIMIT = 100
"""The most document keys the XCom summary lists per kind."""

DocumentRef = tuple[str, str]
"""(platform, document key)"""


@dataclass
class TaskRecord:
    """What Airflow kept of one batch task: its state, every try's end and start, XCom and manifest."""

    state: str
    tries: int
    try_states: dict[int, str] = field(default_factory=dict)
    try_started: dict[int, float] = field(default_factory=dict)
    """Unix time each try started, to tell the runs of the last try from the earlier ones'."""
    summary: dict[str, Any] | None = None
    manifest: dict[str, Any] | None = None
    manifest_path: Path | None = None


@dataclass
class Matched:
    """Every document's runs, oldest first, each with the emulator's summary of it, and the runs of no document."""

    runs: dict[DocumentRef, list[Run]]
    summaries: dict[str, Mapping[str, Any]]
    strays: list[str]

    def newest(self, ref: DocumentRef) -> Mapping[str, Any] | None:
        found = self.runs.get(ref)
        return self.summaries[found[-1].id] if found else None


def match(plan: Plan, summaries: list[dict[str, Any]]) -> Matched:
    matched = Matched({(doc.platform, doc.key): [] for doc in plan.documents}, {}, [])
    for summary in summaries:
        document = plan.document_of(summary)
        matched.summaries[summary["id"]] = summary
        if document is None:
            matched.strays.append(summary["id"])
        else:
            matched.runs[(document.platform, document.key)].append(run_of(summary))
    for runs in matched.runs.values():
        runs.sort(key=lambda run: run.created)
    return matched


def allowed_runs(document: Document, tries: int) -> int:
    """How many runs a document ends with: one, one more after its failed first, or one per try when doomed."""
    return {"fail_once": 2, "doomed": tries}.get(document.fate, 1)


def check_documents(out: Outcome, plan: Plan, matched: Matched, tries: Mapping[str, int]) -> None:
    broken, wrong_count, wrong_end, keys_of = [], [], [], {}
    for document in plan.documents:
        ref = (document.platform, document.key)
        runs = matched.runs[ref]
        broken += [f"{ref}: {problem}" for problem in retry_problems(runs)]
        allowed = allowed_runs(document, tries.get(document.platform, 0))
        if len(runs) != allowed:
            wrong_count.append(f"{ref} ({document.fate}): {len(runs)} runs, the retry rule allows {allowed}")
        if runs and runs[-1].phase != document.final_phase:
            wrong_end.append(f"{ref} ({document.fate}): newest run {runs[-1].id} {runs[-1].phase}")
        keys_of[ref] = {key for run in runs for key in run_keys(matched.summaries[run.id])}
    several_keys = {ref: keys for ref, keys in keys_of.items() if len(keys) != 1}
    shared = [key for key, n in Counter(k for keys in keys_of.values() for k in keys).items() if n > 1]
    all_runs = [run for runs in matched.runs.values() for run in runs]
    alive = [run.id for run in all_runs if run.phase not in (*ENDED, "review")]
    fates = Counter(doc.fate for doc in plan.documents)
    out.figure(f"documents: {len(plan.documents)} ({counts(Counter(d.platform for d in plan.documents))})")
    out.figure(f"fates planned: {counts(fates)}")
    out.figure(f"runs created on the emulator: {len(all_runs) + len(matched.strays)} ({counts(_phases(all_runs))})")
    out.figure(
        f"runs per document: {counts(Counter(str(len(runs)) for runs in matched.runs.values()))}; "
        f"runs of no document: {len(matched.strays)}"
    )
    out.figure(f"retry-rule violations (two alive at once, two succeeded, a run after a live one): {len(broken)}")
    out.figure(f"documents with another number of runs than the retry rule allows: {len(wrong_count)}")
    out.figure(f"documents whose newest run did not end as planned: {len(wrong_end)}")
    out.require(not matched.strays, f"runs of no document: {matched.strays[:10]}")
    out.require(not broken, f"retry rule broken: {broken[:10]}")
    out.require(not wrong_count, f"documents with the wrong number of runs: {wrong_count[:10]}")
    out.require(not wrong_end, f"documents that did not end as planned: {wrong_end[:10]}")
    out.require(not several_keys, f"documents whose runs carry several run keys: {list(several_keys.items())[:5]}")
    out.require(not shared, f"run keys shared by several documents: {shared[:5]}")
    out.require(not alive, f"runs left alive: {alive[:10]}")


def check_task(out: Outcome, batch: BatchTask, plan: Plan, matched: Matched, record: TaskRecord) -> None:
    """Manifest, XCom summary, task state and tries of one batch task."""
    documents = plan.of(batch.platform)
    name = batch.task_id
    expected = Counter(STATE_OF_PHASE[doc.final_phase] for doc in documents)
    failed = expected["failed"] + expected["cancelled"]
    succeeded = expected["succeeded"] + expected["needs_review"]  # on_review="succeed"
    ok = failed <= batch.max_failed and (batch.min_succeeded is None or succeeded >= batch.min_succeeded)
    rule = "success" if ok else "failed"
    out.figure(
        f"{name}: {len(documents)} documents, final counts {counts(expected)}; max_failed {batch.max_failed}, "
        f"min_succeeded {batch.min_succeeded} make it {rule}; it ended {record.state} after {record.tries} tries "
        f"({', '.join(f'{n}: {s}' for n, s in sorted(record.try_states.items()))})"
    )
    out.require(record.state == rule, f"{name} ended {record.state}, its rules on its counts say {rule}")
    out.require(
        record.try_states.get(1) not in (None, "success"), f"{name}'s first try did not fail: {record.try_states}"
    )
    if record.manifest is None:
        out.require(False, f"{name} wrote no manifest at {record.manifest_path}")
    else:
        check_manifest(out, batch, documents, matched, record.manifest, expected)
    check_rerun(out, batch, documents, matched, record)
    check_summary(out, batch, documents, record, expected)
    if batch.max_in_flight is not None:
        runs = [run for doc in documents for run in matched.runs[(doc.platform, doc.key)]]
        most = most_alive(runs)
        out.figure(f"{name}: at most {most} runs alive at once (max_in_flight {batch.max_in_flight})")
        out.require(most <= batch.max_in_flight, f"{name} had {most} runs alive at once, over max_in_flight")


def check_manifest(
    out: Outcome,
    batch: BatchTask,
    documents: list[Document],
    matched: Matched,
    manifest: Mapping[str, Any],
    expected: Counter[str],
) -> None:
    name = batch.task_id
    items = manifest.get("items") or []
    by_key = {item.get("document_key"): item for item in items}
    planned = {doc.key for doc in documents}
    differ = []
    for document in documents:
        item, newest = by_key.get(document.key), matched.newest((document.platform, document.key))
        if item is None or newest is None:
            continue
        state = STATE_OF_PHASE.get(run_of(newest).phase)
        if (item.get("run_id"), item.get("state"), item.get("status")) != (newest["id"], state, newest["status"]):
            differ.append(
                f"{document.key}: manifest {item.get('run_id')} {item.get('state')}/{item.get('status')}, "
                f"platform {newest['id']} {state}/{newest['status']}"
            )
    missing = _missing_landings(items) if batch.lands_outputs else []
    landed = "outputs not landed (manifest_to only)"
    if batch.lands_outputs:
        landed = f"landing folders missing for {len(missing)} succeeded documents{_examples(missing)}"
    out.figure(
        f"{name} manifest: {len(items)} items for {len(documents)} documents, counts "
        f"{counts(manifest.get('counts') or {})}, {len(items) - len(differ)} items match the platform's newest run; "
        f"{landed}"
    )
    out.require(manifest.get("format") == MANIFEST_FORMAT, f"{name} manifest format {manifest.get('format')!r}")
    out.require(
        (manifest.get("platform"), manifest.get("flow_id"), manifest.get("documents"))
        == (batch.platform, batch.flow_id, len(documents)),
        f"{name} manifest names {manifest.get('platform')}/{manifest.get('flow_id')}, {manifest.get('documents')} docs",
    )
    out.require(len(items) == len(by_key) == len(documents), f"{name} manifest: {len(items)} items, {len(by_key)} keys")
    out.require(set(by_key) == planned, f"{name} manifest keys differ: {sorted(set(by_key) ^ planned)[:10]}")
    out.require(not differ, f"{name} manifest differs from the platform: {differ[:5]}")
    out.require(not missing, f"{name}: succeeded documents whose outputs did not land: {missing[:5]}")
    out.require(
        _nonzero(manifest.get("counts") or {}) == _nonzero(expected),
        f"{name} manifest counts {manifest.get('counts')}, planned {dict(expected)}",
    )


def _missing_landings(items: list[Mapping[str, Any]]) -> list[str]:
    """Succeeded documents whose manifest item names no landing folder, or one that does not exist."""
    return [
        str(item.get("document_key"))
        for item in items
        if item.get("state") == "succeeded" and not (item.get("landing") and Path(item["landing"]).exists())
    ]


def check_rerun(
    out: Outcome, batch: BatchTask, documents: list[Document], matched: Matched, record: TaskRecord
) -> None:
    """The last try started runs only for documents whose newest run had failed (or that had none)."""
    name = batch.task_id
    last_start = record.try_started.get(record.tries)
    if last_start is None:
        out.require(False, f"{name}: no start time for try {record.tries}")
        return
    rerun, fresh_after_live, not_rerun = [], [], []
    for document in documents:
        runs = matched.runs[(document.platform, document.key)]
        earlier = [run for run in runs if run.created < last_start]
        restartable = bool(earlier) and earlier[-1].phase in ("failed", "cancelled")
        if len(earlier) == len(runs):
            not_rerun += [document.key] if restartable else []
        elif earlier:
            rerun.append(document.key)
            if not restartable:
                fresh_after_live.append(f"{document.key}: after {earlier[-1].id} {earlier[-1].phase}")
    started_late = sum(
        1 for doc in documents for run in matched.runs[(doc.platform, doc.key)] if run.created >= last_start
    )
    out.figure(
        f"{name} try {record.tries}: {started_late} runs started, {len(rerun)} of them re-runs of failed documents"
        + (f" (XCom says {record.summary.get('started')})" if record.summary else "")
    )
    out.require(not fresh_after_live, f"{name}'s last try re-ran documents with a live run: {fresh_after_live[:5]}")
    out.require(not not_rerun, f"{name}'s last try left documents with a failed run alone: {not_rerun[:5]}")
    if record.summary is not None:
        out.require(
            record.summary.get("started") == started_late,
            f"{name}: XCom started {record.summary.get('started')}, the last try started {started_late} runs",
        )


def check_summary(
    out: Outcome, batch: BatchTask, documents: list[Document], record: TaskRecord, expected: Counter[str]
) -> None:
    name, summary = batch.task_id, record.summary
    if summary is None:
        out.require(False, f"{name} pushed no XCom summary")
        return
    failed = sorted(doc.key for doc in documents if doc.final_phase in ("failed", "cancelled"))
    review = sorted(doc.key for doc in documents if doc.final_phase == "review")
    got = (
        summary.get("platform"),
        summary.get("flow_id"),
        summary.get("documents"),
        _nonzero(summary.get("counts") or {}),
    )
    want = (batch.platform, batch.flow_id, len(documents), _nonzero(expected))
    out.require(got == want, f"{name} XCom summary {got}, expected {want}")
    out.require(
        sorted(summary.get("failed_documents") or []) == failed[:SUMMARY_LIMIT], f"{name} XCom failed_documents"
    )
    out.require(
        sorted(summary.get("review_documents") or []) == review[:SUMMARY_LIMIT], f"{name} XCom review_documents"
    )
    out.require(
        summary.get("manifest") is not None and str(record.manifest_path) in str(summary.get("manifest")),
        f"{name} XCom names manifest {summary.get('manifest')!r}, not {record.manifest_path}",
    )


def figure_requests(out: Outcome, plan: Plan, requests: list[Mapping[str, Any]]) -> None:
    """API requests per document on each platform, faults and retries included."""
    per_platform = Counter(str(entry.get("platform")) for entry in requests)
    documents = Counter(doc.platform for doc in plan.documents)
    shares = ", ".join(f"{name} {per_platform[name] / count:.1f}" for name, count in sorted(documents.items()))
    out.figure(f"API requests per document (faults and retries included): {shares}")


def most_alive(runs: list[Run]) -> int:
    """The most runs alive at one moment, from when each was created and first ended (a run that never
    ended, in review, stays alive to the end)."""
    events = sorted([(run.created, 1) for run in runs] + [(run.ended, -1) for run in runs if run.ended is not None])
    alive = most = 0
    for _, step in events:  # at equal times an end sorts before a start: a slot freed is reused, not exceeded
        alive += step
        most = max(most, alive)
    return most


def _nonzero(counter: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in counter.items() if value}


def _phases(runs: list[Run]) -> Counter[str]:
    return Counter(run.phase for run in runs)


def _examples(keys: list[str]) -> str:
    return f" (e.g. {keys[:3]})" if keys else ""
