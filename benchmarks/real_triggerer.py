"""Benchmark 5: the trigger density inside a real ``airflow triggerer`` process.

One temporary ``AIRFLOW_HOME``, on PostgreSQL (a server of the benchmark's own, as production runs) or
SQLite (``benchmarks/real_triggerer_metadata.py``), holds, per configuration (platform, N, trigger kind), a DAG
whose ``follow`` task is a ``FlowRunOperator`` mapped over N documents. Its N task instances are left
deferred with their trigger rows (``benchmarks/real_triggerer_db.py``): for a few tasks by really running
the operator as ``airflow dags test`` does, so it starts its run and defers (``--real-upto``, default 20);
for more, in bulk through Airflow's ORM, as that deferral leaves them, on runs seeded in the emulator.
Then ``airflow triggerer`` starts (its supervisor, its database loop and its trigger runner process), with
``[triggerer] capacity`` and ``max_trigger_to_select_per_loop`` above N, and follows them against the
emulator over HTTPS on loopback until every task instance has left ``deferred``; then it is stopped.

The runs finish at random over ``window`` seconds after ``offset`` (by default two poll intervals plus
N / 20 s, so every trigger is running and has polled before the first run finishes). Measured, over the
steady window from the moment every trigger has polled once to the last event the triggerer delivered:

- CPU of the triggerer's process tree (psutil, sampled every second: supervisor and runner apart), and
  apart from it, the PostgreSQL server's, where the triggerer's queries run when it is on PostgreSQL;
- polls: each trigger records when it polled and its event carries the times (``real_triggerer_triggers``);
- event-loop lag: a canary trigger in the same triggerer sleeps 100 ms over and over and records how late
  it wakes;
- events: task instances that left ``deferred``; detection: the run's scripted finish to the moment the
  triggerer scheduled its task instance; requests and TCP connections: what the emulator received.

Two trigger kinds, one after the other in the same benchmark run: ``shared`` (``FlowRunTrigger`` as it
ships) and ``session-per-poll`` (the density benchmark's baseline: a new session, so a new TLS handshake,
per poll).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from airflow_flowruns.platforms.extend.emulator import EXTEND_INVOICE_WORKFLOW
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_SMALL_FILE_FLOW
from benchmarks.common import Emulator, percentile
from benchmarks.real_triggerer_metadata import MetadataDb
from benchmarks.real_triggerer_triggers import CANARY_TASK, FOLLOW_TASK
from e2e.stack import BIN, Stack

ROOT = Path(__file__).resolve().parent.parent
LOADED_PER_SECOND = 20
"""Triggers the runs' offset allows for a second, counted from seeding the runs: deferring 10,000 tasks in bulk
takes one to six minutes, and loading them takes the triggerer 70 to 120 s of CPU (the serialized DAG read per
trigger), on a shared machine with its supervisor getting as little as a fifth of a core."""
KINDS = ("shared", "session-per-poll")
PLATFORMS = {"tableflow": (TABLEFLOW_SMALL_FILE_FLOW, "document"), "extend": (EXTEND_INVOICE_WORKFLOW, "file")}
DAG_FILE = """# The Airflow DAGs of the real-triggerer benchmark (safe-mode discovery looks for both words).
from benchmarks.real_triggerer_triggers import build_dags

globals().update(build_dags({plan!r}))
"""


@dataclass(frozen=True)
class Config:
    platform: str
    n: int
    kind: str
    mode: str

    @property
    def dag_id(self) -> str:
        return f"bench_{self.platform}_{self.kind.replace('-', '_')}_{self.n}"


@dataclass
class Samples:
    """CPU seconds of the triggerer's processes (supervisor, the rest) and of the database server every
    second, and the triggerer's peak RSS."""

    times: list[float] = field(default_factory=list)
    supervisor: list[float] = field(default_factory=list)
    children: list[float] = field(default_factory=list)
    database: list[float] = field(default_factory=list)
    peak_rss: int = 0

    def take(self, root: psutil.Process, db: MetadataDb) -> None:
        cpu = root.cpu_times()
        rss = root.memory_info().rss
        children = 0.0
        for child in root.children(recursive=True):
            try:  # a short-lived child may exit between the listing and the reading
                with child.oneshot():
                    times, rss = child.cpu_times(), rss + child.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            children += times.user + times.system
        self.times.append(time.time())
        self.supervisor.append(cpu.user + cpu.system)
        self.children.append(children)
        self.database.append(db.server_cpu_seconds())
        self.peak_rss = max(self.peak_rss, rss)

    def at(self, series: list[float], when: float) -> float:
        """``series`` linearly interpolated at ``when``."""
        for i in range(1, len(self.times)):
            if self.times[i] >= when:
                t0, t1 = self.times[i - 1], self.times[i]
                share = (when - t0) / (t1 - t0) if t1 > t0 else 1.0
                return series[i - 1] + share * (series[i] - series[i - 1])
        return series[-1]


class Bench:
    """The Airflow home, its metadata database, DAG file and emulator shared by every configuration of one
    benchmark run."""

    def __init__(
        self,
        emulator: Emulator,
        stack: Stack,
        db: MetadataDb,
        configs: list[Config],
        poll_interval: float,
        window: float,
    ):
        self.emulator, self.stack, self.db, self.configs = emulator, stack, db, configs
        self.root = root = stack.root
        self.poll_interval, self.window = poll_interval, window
        capacity = str(max(c.n for c in configs) + 10)
        self.stack.env.update(
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=db.url,
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            AIRFLOW__TRIGGERER__CAPACITY=capacity,
            AIRFLOW__TRIGGERER__MAX_TRIGGER_TO_SELECT_PER_LOOP=capacity,
            AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
        )
        for platform in {c.platform for c in configs}:
            conn_id = emulator.connect(f"bench_{platform}", platform, max_concurrent_requests=32, max_retries=8)
            self.stack.env[f"AIRFLOW_CONN_{conn_id.upper()}"] = os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"]
        self.document = root / "doc.pdf"
        self.document.write_bytes(b"%PDF-1.4\n% benchmark document\n%%EOF\n")
        self.plan_file = root / "plan.json"
        self.plan_file.write_text(json.dumps([self.plan(c) for c in configs], indent=1))
        (self.stack.dags / "real_triggerer.py").write_text(DAG_FILE.format(plan=str(self.plan_file)))
        self.stack.run("db-migrate", [str(BIN / "airflow"), "db", "migrate"], timeout=600)
        self.stack.run("reserialize", [str(BIN / "airflow"), "dags", "reserialize"], timeout=600)

    def plan(self, config: Config) -> dict[str, Any]:
        flow_id, file_field = PLATFORMS[config.platform]
        return {
            "dag_id": config.dag_id,
            "platform": config.platform,
            "kind": config.kind,
            "mode": config.mode,
            "n": config.n,
            "conn_id": f"bench_{config.platform}",
            "flow_id": flow_id,
            "file_field": file_field,
            "file": str(self.document),
            "poll_interval": self.poll_interval,
            "timeout": 6 * 3600,
            "run_ids_file": str(self.root / f"{config.dag_id}.ids.json"),
            "canary_file": str(self.root / f"{config.dag_id}.canary"),
        }

    def in_airflow(self, command: str, config: Config) -> Any:
        argv = [sys.executable, "-m", "benchmarks.real_triggerer_db", command, str(self.plan_file), config.dag_id]
        done = subprocess.run(argv, env=self.stack.env, capture_output=True, text=True, timeout=3600, cwd=ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[2:])} failed:\n{done.stderr[-4000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def run_one(self, config: Config) -> dict[str, Any]:
        plan = self.plan(config)
        offset = 2 * self.poll_interval + config.n / LOADED_PER_SECOND
        self.emulator.reset()
        timing = {"processing_seconds": offset, "processing_jitter_seconds": self.window}
        if config.mode == "real":
            path = f"/{config.platform}/flows/{plan['flow_id']}/scenario"
            self.emulator.control.put(path, json=timing).raise_for_status()
        else:
            ids = self.emulator.seed(plan["flow_id"], config.n, config.platform, **timing)
            Path(plan["run_ids_file"]).write_text(json.dumps(ids))
        made = self.in_airflow("defer", config)
        assert made["deferred"] == config.n, made
        before = self.emulator.stats()
        samples = Samples()
        started = time.time()
        proc = self.stack.airflow(f"triggerer-{config.dag_id}", "triggerer", "--skip-serve-logs")
        root = psutil.Process(proc.pid)
        give_up = started + offset + self.window + 6 * self.poll_interval + config.n / 20
        while self.db.deferred_left(config.dag_id, FOLLOW_TASK) and time.time() < give_up:
            self.stack.check_alive()
            samples.take(root, self.db)
            time.sleep(1.0)
        samples.take(root, self.db)
        Path(plan["canary_file"] + ".stop").touch()
        for _ in range(30):
            if not self.db.deferred_left(config.dag_id, CANARY_TASK):
                break
            time.sleep(1.0)
        self.stack.stop_one(f"triggerer-{config.dag_id}")
        after = self.emulator.stats()
        tis = self.in_airflow("read", config)
        finished = {run["id"]: run["finished_at"] for run in self.emulator.runs()}
        row = self.figures(
            config,
            plan,
            tis,
            samples,
            started,
            finished,
            after["requests"] - before["requests"],
            after["connections"] - before["connections"],
        )
        return {**row, "offset_s": offset, "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}

    def figures(
        self,
        config: Config,
        plan: dict[str, Any],
        tis: list[dict[str, Any]],
        samples: Samples,
        started: float,
        finished: dict[str, float | None],
        requests: int,
        connections: int,
    ) -> dict[str, Any]:
        events = [ti["event"] for ti in tis if ti["event"] is not None]
        settled = [e for e in events if e.get("outcome") == "settled"]
        polls = sorted(t for e in events for t in e.get("poll_times", []))
        first_polls = [min(e["poll_times"]) for e in events if e.get("poll_times")]
        delivered = [ti["scheduled_at"] for ti in tis if ti["scheduled_at"]]
        t0 = max(first_polls) if first_polls else started
        t1 = max(delivered) if delivered else samples.times[-1]
        window_polls = sum(t0 <= t <= t1 for t in polls)
        cpu_sup = samples.at(samples.supervisor, t1) - samples.at(samples.supervisor, t0)
        cpu_children = samples.at(samples.children, t1) - samples.at(samples.children, t0)
        cpu = cpu_sup + cpu_children
        cpu_db = samples.at(samples.database, t1) - samples.at(samples.database, t0)
        wall = max(t1 - t0, 1e-9)
        lags = sorted(self.canary_lags(plan["canary_file"], t0, t1))
        by_run = {e["run_id"]: ti["scheduled_at"] for ti, e in ((ti, ti["event"]) for ti in tis) if e}
        detect = sorted(at - f for r, at in by_run.items() if (f := finished.get(r)) and at)
        return {
            "platform": config.platform,
            "trigger": config.kind,
            "n": config.n,
            "database": self.db.kind,
            "created": config.mode,
            "poll_interval_s": self.poll_interval,
            "events": len(events),
            "settled": len(settled),
            "still_deferred": sum(ti["state"] == "deferred" for ti in tis),
            "polls": len(polls),
            "polls_per_run": len(polls) / config.n,
            "requests_per_run": requests / config.n,
            "tcp_connections": connections,
            "load_s": t0 - started,
            "first_finish_s": min(filter(None, finished.values()), default=started) - started,
            "load_cpu_s": samples.at(samples.supervisor, t0) + samples.at(samples.children, t0),
            "load_database_cpu_s": samples.at(samples.database, t0) - samples.database[0],
            "steady_s": t1 - t0,
            "steady_polls": window_polls,
            "cpu_ms_per_poll": 1000 * cpu / window_polls if window_polls else None,
            "runner_cpu_ms_per_poll": 1000 * cpu_children / window_polls if window_polls else None,
            "cores": cpu / wall,
            "supervisor_cores": cpu_sup / wall,
            "runner_cores": cpu_children / wall,
            "database_cpu_ms_per_poll": 1000 * cpu_db / window_polls if window_polls else None,
            "database_cores": cpu_db / wall,
            "peak_rss_mib": samples.peak_rss / 2**20,
            "loop_lag_p50_ms": 1000 * percentile(lags, 50),
            "loop_lag_p99_ms": 1000 * percentile(lags, 99),
            "loop_lag_max_ms": 1000 * lags[-1] if lags else None,
            "detect_p50_s": percentile(detect, 50),
            "detect_p99_s": percentile(detect, 99),
        }

    @staticmethod
    def canary_lags(path: str, t0: float, t1: float) -> list[float]:
        if not Path(path).exists():
            return []
        lines = (line.split() for line in Path(path).read_text().splitlines())
        return [float(lag) for when, lag in lines if t0 <= float(when) <= t1]


def run(
    emulator: Emulator,
    root: Path,
    platforms: list[str],
    sizes: list[int],
    poll_interval: float,
    window: float,
    real_upto: int = 20,
    database: str = "sqlite",
) -> list[dict[str, Any]]:
    configs = [
        Config(platform, n, kind, "real" if n <= real_upto else "bulk")
        for platform in platforms
        for n in sizes
        for kind in KINDS
    ]
    stack = Stack(root, parallelism=32)
    db = MetadataDb(database, stack.home, root / "postgres")
    try:
        db.start()
        bench = Bench(emulator, stack, db, configs, poll_interval, window)
        return [bench.run_one(config) for config in configs]
    finally:
        stack.stop()
        db.stop()


def merge(earlier: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of this run, and those of an earlier one for the platforms, sizes and databases this run left
    out (each pair of trigger kinds is always measured in the same run), in a stable order."""
    measured = {_pair(r) for r in rows}
    kept = [r for r in earlier if _pair(r) not in measured]
    order = {kind: i for i, kind in enumerate(KINDS)}
    return sorted([*kept, *rows], key=lambda r: (*_pair(r), order.get(r["trigger"], 9)))


def _pair(row: dict[str, Any]) -> tuple[str, int, str]:
    """What a pair of trigger kinds measured together shares: platform, N and metadata database."""
    return row["platform"], row["n"], row["database"]


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The baseline's CPU per poll over the shared trigger's, per platform, N and database, in the same
    triggerer: the whole triggerer, its runner alone, and the triggerer with the database server."""
    by = {(*_pair(r), r["trigger"]): r for r in rows}
    out = []
    for platform, n, database, kind in by:
        base = by.get((platform, n, database, "session-per-poll"))
        mine = by[(platform, n, database, kind)]
        if kind != "shared" or base is None or not mine["cpu_ms_per_poll"]:
            continue
        out.append(
            {
                "platform": platform,
                "n": n,
                "database": database,
                "cpu_per_poll_baseline_over_shared": base["cpu_ms_per_poll"] / mine["cpu_ms_per_poll"],
                "runner_cpu_per_poll_baseline_over_shared": (
                    base["runner_cpu_ms_per_poll"] / mine["runner_cpu_ms_per_poll"]
                ),
                "with_database_cpu_per_poll_baseline_over_shared": (
                    (base["cpu_ms_per_poll"] + base["database_cpu_ms_per_poll"])
                    / (mine["cpu_ms_per_poll"] + mine["database_cpu_ms_per_poll"])
                ),
                "cores_shared": mine["cores"],
                "cores_baseline": base["cores"],
                "database_cores_shared": mine["database_cores"],
                "database_cores_baseline": base["database_cores"],
            }
        )
    return out
