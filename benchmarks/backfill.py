"""Benchmark 7: a backfill of N documents through a real Airflow, one mapped task per document beside one
batch task for them all.

The same folder of N tiny documents, on one Airflow (``benchmarks/backfill_stack.py``: API server,
scheduler with the LocalExecutor, DAG processor, triggerer) against the emulator over HTTPS on loopback,
in two modes (``benchmarks/backfill_dags.py``):

- ``mapped``, the baseline: a deferrable ``FlowRunOperator`` mapped over the folder's files
  (``[core] max_map_length`` raised to N), one task instance and one trigger per document;
- ``batch``: one deferrable ``FlowRunBatchOperator`` over the folder.

Runs settle 20 to 30 seconds after they start. With a limit the emulator answers 429 beyond it (per
API key) and the connection's ``max_requests_per_second`` is set to the same value.

Measured per configuration: the DAG run's wall time (its start to its end, as Airflow records them); CPU
seconds of every Airflow process, task processes included, from the moment it is triggered to two seconds
after it ends (``ProcessMeter``); Airflow's idle CPU over the ten seconds before, for reference; the requests
the emulator received; the emulator's runs per document (each run carries its document's key in its
metadata): documents whose last run settled, documents with more than one run; peak RSS of a task process
and of the triggerer.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_flowruns.platforms.extend.emulator import EXTEND_INVOICE_WORKFLOW
from airflow_flowruns.platforms.start import DOCUMENT_KEY_FIELD, TASK_KEY_FIELD
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_SMALL_FILE_FLOW
from benchmarks.backfill_dags import BATCH, BATCH_TASK, FOLLOW_TASK, MAPPED, dag_id
from benchmarks.backfill_stack import ROOT, BackfillAirflow
from benchmarks.common import Emulator
from e2e.retry_rule import ENDED, run_of
from e2e.stack import E2EError

PLATFORMS = {"tableflow": (TABLEFLOW_SMALL_FILE_FLOW, "document"), "extend": (EXTEND_INVOICE_WORKFLOW, "file")}
SCENARIO = {"queued_seconds": 0.0, "processing_seconds": 20.0, "processing_jitter_seconds": 10.0}
"""Runs settle 20 to 30 s after they start: later than Airflow's executor reports a deferral, so a trigger
firing on its first poll does not meet the race between the two (see ``backfill_dags``)."""
POLL_INTERVAL = 5.0
TIMEOUT = 6 * 3600
SAMPLE_SECONDS = 0.5
IDLE_SECONDS = 10.0
AFTER_END_SECONDS = 2.0
"""Sampled past the DAG run's end, so the last task process is reaped and counted in its supervisor."""
TARGETS = {"cpu_ratio": 20.0, "wall_vs_limit": 1.25, "requests_per_document": 1.5}
MIB = 2**20


@dataclass(frozen=True)
class Config:
    mode: str
    platform: str
    documents: int

    @property
    def dag_id(self) -> str:
        return dag_id(self.mode, self.platform)

    @property
    def run_id(self) -> str:
        return f"{self.mode}-{self.platform}-{self.documents}"


def documents_folder(root: Path, count: int) -> Path:
    """``count`` tiny PDF files, a thousand to a subfolder (made once per size, shared by every configuration)."""
    folder = root / f"documents-{count}"
    if not folder.exists():
        for index in range(count):
            path = folder / f"part-{index // 1000:02d}" / f"doc-{index:05d}.pdf"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"%PDF-1.4\n% backfill document " + str(index).encode() + b"\n%%EOF\n")
    return folder


class Backfill:
    """Runs each configuration on one Airflow and one emulator, and makes its row."""

    def __init__(self, emulator: Emulator, airflow: BackfillAirflow, root: Path, limit: float | None) -> None:
        self.emulator, self.airflow, self.root, self.limit = emulator, airflow, root, limit

    def prepare_emulator(self, platform: str) -> None:
        self.emulator.reset()
        flow_id, _ = PLATFORMS[platform]
        self.emulator.control.put(f"/{platform}/flows/{flow_id}/scenario", json=SCENARIO).raise_for_status()
        self.emulator.control.put("/rate-limit", json={"per_second": self.limit}).raise_for_status()

    def sample_for(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            self.airflow.meter.sample()
            time.sleep(SAMPLE_SECONDS)
        self.airflow.meter.sample()

    def run_one(self, config: Config) -> dict[str, Any]:
        folder = documents_folder(self.root, config.documents)
        self.prepare_emulator(config.platform)
        meter = self.airflow.meter
        meter.sample()
        idle_from, idle_since = meter.total(), time.monotonic()
        self.sample_for(IDLE_SECONDS)
        idle_cores = (meter.total() - idle_from) / (time.monotonic() - idle_since)
        meter.reset_peaks()
        cpu_from = meter.total()
        self.airflow.trigger(config.dag_id, config.run_id, folder)
        dag_run = self.follow(config)
        self.sample_for(AFTER_END_SECONDS)
        cpu = meter.total() - cpu_from
        return self.figures(config, dag_run, cpu, idle_cores)

    def follow(self, config: Config) -> dict[str, Any]:
        """Sample until the DAG run ends; give up after a generous time for its size and the limit."""
        limited = 4 * config.documents / self.limit if self.limit else 0.0
        give_up = time.monotonic() + 900 + 3 * config.documents + limited
        checked = 0.0
        while time.monotonic() < give_up:
            self.airflow.meter.sample()
            if time.monotonic() - checked >= 2:
                self.airflow.stack.check_alive()
                dag_run = self.airflow.dag_run(config.dag_id, config.run_id)
                if dag_run["state"] in ("success", "failed") and dag_run["end"] is not None:
                    return dag_run
                checked = time.monotonic()
            time.sleep(SAMPLE_SECONDS)
        raise E2EError(f"{config.run_id} did not end within the time allowed")

    def figures(self, config: Config, dag_run: dict[str, Any], cpu: float, idle_cores: float) -> dict[str, Any]:
        tis = self.airflow.task_instances(config.dag_id, config.run_id)
        stats = self.emulator.stats()
        per_document = runs_per_document(self.emulator.runs())
        wall = dag_run["end"] - dag_run["start"]
        requests = stats["requests"]
        min_wall = requests / self.limit if self.limit else None
        peaks = self.airflow.meter.peak_rss
        return {
            "mode": config.mode,
            "platform": config.platform,
            "documents": config.documents,
            "limit_per_s": self.limit,
            "measured_on": time.strftime("%Y-%m-%d", time.gmtime()),
            "commit": commit(),
            "dag_run": dag_run["state"],
            "settled": sum(1 for runs in per_document.values() if runs[-1].phase in ENDED),
            "succeeded": self.succeeded(config, tis),
            "duplicates": sum(1 for runs in per_document.values() if len(runs) > 1),
            "runs": sum(len(runs) for runs in per_document.values()),
            "wall_s": wall,
            "airflow_cpu_s": cpu,
            "cpu_per_document_ms": 1000 * cpu / config.documents,
            "idle_cores": idle_cores,
            "task_instances": len(tis),
            "task_states": dict(Counter(state for _, _, state, _ in tis)),
            "task_tries": sum(tries for *_, tries in tis),
            "requests": requests,
            "requests_per_document": requests / config.documents,
            "rate_limited": stats["rate_limited"],
            "min_wall_s": min_wall,
            "wall_vs_limit": wall / min_wall if min_wall else None,
            "peak_rss_mib": max(peaks.values()) / MIB,
            "worker_peak_rss_mib": peaks["worker"] / MIB,
            "triggerer_peak_rss_mib": peaks["triggerer"] / MIB,
        }

    def succeeded(self, config: Config, tis: list[tuple[str, int, str, int]]) -> int:
        """Documents Airflow reports succeeded: successful mapped task instances, or the batch's own count."""
        if config.mode == MAPPED:
            return sum(1 for task, _, state, _ in tis if task == FOLLOW_TASK and state == "success")
        summary = self.airflow.return_value(config.dag_id, config.run_id, BATCH_TASK) or {}
        return int(summary.get("counts", {}).get("succeeded", 0))


def runs_per_document(runs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The emulator's runs by the document their metadata names (a batch's document key, or a mapped task's
    task key), oldest first; runs naming none are left out."""
    by_document: dict[str, list[Any]] = defaultdict(list)
    for summary in sorted(runs, key=lambda run: run["created_at"]):
        metadata = summary.get("metadata") or {}
        key = metadata.get(DOCUMENT_KEY_FIELD, metadata.get(TASK_KEY_FIELD))
        if key is not None:
            by_document[key].append(run_of(summary))
    return by_document


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def configs(platforms: list[str], sizes: list[int], mapped_size: int) -> list[Config]:
    """Per platform: the mapped baseline (none when ``mapped_size`` is 0), then the batch at each size."""
    out = []
    for platform in platforms:
        if platform not in PLATFORMS:
            raise ValueError(f"unknown platform {platform!r}: choose from {', '.join(PLATFORMS)}")
        out += [Config(MAPPED, platform, mapped_size)] if mapped_size else []
        out += [Config(BATCH, platform, n) for n in sizes]
    return out


def settings(chosen: list[Config]) -> dict[str, Any]:
    """What the DAG file builds: the modes and platforms measured, their connections and flows."""
    platforms = sorted({c.platform for c in chosen})
    return {
        "modes": sorted({c.mode for c in chosen}),
        "platforms": [
            {"name": p, "conn_id": f"backfill_{p}", "flow_id": PLATFORMS[p][0], "file_field": PLATFORMS[p][1]}
            for p in platforms
        ],
        "poll_interval": POLL_INTERVAL,
        "timeout": TIMEOUT,
        "max_documents": max(c.documents for c in chosen),
    }


def run(
    emulator: Emulator, root: Path, platforms: list[str], sizes: list[int], mapped_size: int, limit: float | None
) -> list[dict[str, Any]]:
    chosen = configs(platforms, sizes, mapped_size)
    airflow = BackfillAirflow(root, emulator, settings(chosen), limit)
    try:
        airflow.start()
        bench = Backfill(emulator, airflow, root, limit)
        rows = []
        for config in chosen:
            print(f"backfill: {config.run_id}, limit {limit or 'none'}", flush=True)
            rows.append(bench.run_one(config))
        return with_cpu_ratio(rows)
    finally:
        airflow.stop()
        emulator.reset()  # the rate limit off again for whatever runs next


def with_cpu_ratio(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each batch row with the mapped baseline's CPU per document over its own, for the mapped row of the same
    platform and limit measured in the same run (None without one)."""
    mapped = {(r["platform"], r["limit_per_s"]): r for r in rows if r["mode"] == MAPPED}
    for row in rows:
        base = mapped.get((row["platform"], row["limit_per_s"]))
        if row["mode"] == BATCH:
            ratio = base["cpu_per_document_ms"] / row["cpu_per_document_ms"] if base else None
            row["mapped_cpu_per_document_over_batch"] = ratio
    return rows


def merge(earlier: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """This run's rows, and an earlier run's for every (mode, platform, documents, limit) this one left out."""
    measured = {_key(r) for r in rows}
    kept = [r for r in earlier if _key(r) not in measured]
    return sorted([*kept, *rows], key=lambda r: (r["platform"], r["limit_per_s"] or 0, r["mode"], r["documents"]))


def _key(row: dict[str, Any]) -> tuple[str, str, int, float | None]:
    return row["mode"], row["platform"], row["documents"], row["limit_per_s"]


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """Each batch row of this run against the targets, one line each: met or not, with the figure."""
    lines = []
    for row in (r for r in rows if r["mode"] == BATCH):
        name = f"{row['platform']} batch {row['documents']:,}, limit {row['limit_per_s'] or 'none'}"
        whole = row["settled"] == row["succeeded"] == row["documents"] and row["duplicates"] == 0
        lines.append(f"{name}: {row['settled']:,} settled, {row['duplicates']} duplicates: {_met(whole)}")
        ratio = row.get("mapped_cpu_per_document_over_batch")
        if ratio is not None:
            lines.append(f"{name}: CPU per document {ratio:.1f}x below mapped: {_met(ratio >= TARGETS['cpu_ratio'])}")
        if row["wall_vs_limit"] is not None:
            met = row["wall_vs_limit"] <= TARGETS["wall_vs_limit"]
            lines.append(f"{name}: wall {row['wall_vs_limit']:.2f}x the limit's minimum: {_met(met)}")
        met = row["requests_per_document"] <= TARGETS["requests_per_document"]
        lines.append(f"{name}: {row['requests_per_document']:.2f} requests per document: {_met(met)}")
    return lines


def _met(ok: bool) -> str:
    return "met" if ok else "NOT MET"
