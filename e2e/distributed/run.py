"""``make e2e-distributed``: the provider under a production-shaped Airflow on one machine.

PostgreSQL and Redis (Debian's packages) run as services of this run; Airflow runs with the
CeleryExecutor as separate processes: API server, scheduler, DAG processor, two Celery workers and two
triggerers alive at once; the emulator in fault mode, with a per-key rate limit below what all those
processes together would ask for, stands in for TableFlow, Extend and Noxus. The DAG splits the documents
between a deferrable task and a worker-waiting task (``retries=2``). During the run one triggerer is
killed (its triggers must move to the other), then a Celery worker with tasks waiting on live runs,
then Redis is restarted. The checks (:mod:`e2e.distributed.report`) print figures and exit non-zero on
any failure. Everything started is stopped and the temporary folder removed at the end, whatever
happened (``--keep`` keeps the folder for a look at logs and the database dump).
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import httpx

from e2e.distributed import chaos, report
from e2e.distributed.checks import TaskRef, phase, ref_of
from e2e.distributed.dags.flowruns_distributed import DAG_ID, TASKS
from e2e.distributed.emulator import TIMELINES_PATH, TRAFFIC_PATH
from e2e.distributed.platforms import PROFILES, file_name
from e2e.distributed.services import Postgres, Redis, ensure_packages
from e2e.distributed.traffic import PortSampler
from e2e.harness import Outcome, interrupt
from e2e.run import OUTCOMES
from e2e.secret_scan import Findings, scan_rows
from e2e.stack import BIN, AirflowApi, E2EError, Stack, free_port, wait_for

DAG_FILE = Path(__file__).resolve().parent / "dags" / "flowruns_distributed.py"
RUN_ID = "distributed"
TRIGGERERS = ("triggerer-1", "triggerer-2")
WORKERS = ("worker-1", "worker-2")
SNAPSHOT_SECONDS = 10.0
HEARTBEAT_FRESH = 5.0
"""A triggerer is killed only while both heartbeat, so its triggers are its own until the kill."""


class Distributed:
    def __init__(self, stack: Stack, postgres: Postgres, redis: Redis, args: argparse.Namespace) -> None:
        self.stack, self.db, self.redis, self.args = stack, postgres, redis, args
        self.key = "sk-e2e-" + secrets.token_hex(16)
        self.rng = random.Random(args.seed)
        self.started = time.monotonic()
        self.outcome = Outcome()
        self.api = AirflowApi(stack.api_url)
        self.emulator = httpx.Client(timeout=60)
        self.jobs: dict[str, int] = {}
        """Triggerer component name to its job id."""
        self.log_ports: dict[str, int] = {}
        self.hand_off: chaos.TriggererHandOff | None = None
        self.worker_kill: chaos.WorkerKill | None = None
        self.redis_restart_at: float | None = None
        self.trigger_findings = Findings(self.key, controls=("poll_interval",))
        self.redis_findings = Findings(self.key, controls=("celery",))
        self.by_key: dict[str, TaskRef] = {}

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f} s] {message}", flush=True)

    # --- setup -----------------------------------------------------------------------------------

    def configure(self) -> None:
        """Point Airflow at PostgreSQL and Redis, with the CeleryExecutor."""
        slots = 2 * self.args.worker_concurrency
        self.stack.env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(slots),
                "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(slots),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.db.url,
                "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.db.url,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.args.worker_concurrency),
                "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
                # A task whose Celery message was lost is queued again rather than waited on for ten minutes.
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "120",
                # On a busy machine a live process's heartbeat can be 30 s late: only a longer silence means
                # a lost worker or triggerer, else live triggers move between triggerers and live tries fail.
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "45",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "90",
            }
        )

    def start_emulator(self) -> None:
        config = self.stack.root / "emulator.json"
        config.write_text(json.dumps({"api_keys": [self.key]}))
        argv = [str(BIN / "python"), "-m", "e2e.distributed.emulator", "--config", str(config)]
        argv += ["--fault-rate", str(self.args.fault_rate), "--fault-seed", str(self.args.seed)]
        argv += ["--rate-limit", str(self.args.rate_limit)]
        self.stack.start("emulator", argv, {"PYTHONPATH": str(Path(__file__).resolve().parents[2])})
        log = self.stack.procs / "emulator.log"

        def listening() -> str | None:
            self.stack.check_alive()
            text = log.read_text() if log.exists() else ""
            return text.split("listening on ")[1].split()[0] if "listening on " in text else None

        self.emulator_url = wait_for("the emulator", listening, timeout=60, interval=0.2)
        self.emulator.base_url = httpx.URL(self.emulator_url)
        base = {"processing_seconds": self.args.processing_seconds, "processing_jitter_seconds": self.args.jitter}
        scenarios = {
            "completed": base,
            "failed": {**base, "outcome": "failed", "error": "Extraction failed: e2e says so"},
            "review": {**base, "review": True, "review_seconds": None},
        }
        for platform, profile in PROFILES.items():
            for outcome, flow_id in profile.flows.items():
                put = self.emulator.put(f"/_emulator/{platform}/flows/{flow_id}/scenario", json=scenarios[outcome])
                put.raise_for_status()
        limit = f"{self.args.rate_limit:g} req/s per key"
        self.log(f"emulator on {self.emulator_url}: fault rate {self.args.fault_rate:.0%}, {limit}")

    def start_airflow(self) -> None:
        shutil.copy(DAG_FILE, self.stack.dags / DAG_FILE.name)
        self.log("migrating the Airflow database (PostgreSQL)")
        self.stack.run("db-migrate", [str(BIN / "airflow"), "db", "migrate"], timeout=600)
        self.stack.airflow("api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.stack.api_port))
        self.stack.airflow("scheduler", "scheduler", "--skip-serve-logs")
        self.stack.airflow("dag-processor", "dag-processor")
        for name in TRIGGERERS:
            self.start_triggerer(name)
        for name in WORKERS:
            self.start_worker(name)

        def healthy() -> bool | None:
            self.stack.check_alive()
            return self.api.healthy()

        wait_for("the API server", healthy, timeout=300)
        self.api.login()
        for platform in PROFILES:
            extra = {
                "timeout": self.args.client_timeout,
                "retry_min_wait": 0.5,
                "retry_max_wait": 5,
                "max_requests_per_second": self.args.client_rate,
            }
            self.api.add_connection(f"{platform}_e2e", platform, self.emulator_url, self.key, extra)

        def parsed() -> bool | None:
            self.stack.check_alive()
            return True if self.api.http.get(f"/api/v2/dags/{DAG_ID}").status_code == 200 else None

        wait_for(f"the DAG processor to parse {DAG_ID}", parsed, timeout=300)
        self.log(f"Airflow is up: {self.stack.api_url}, triggerer jobs {self.jobs}")

    def start_triggerer(self, name: str) -> None:
        """Start a triggerer and wait for its job, so each job id is known to belong to one process."""
        before = set(chaos.triggerer_jobs(self.db))
        self.log_ports[name] = free_port()
        env = {"AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.log_ports[name])}
        self.stack.airflow(name, "triggerer", env=env)

        def new_job() -> int | None:
            self.stack.check_alive()
            return next(iter(set(chaos.triggerer_jobs(self.db)) - before), None)

        self.jobs[name] = wait_for(f"{name}'s job", new_job, timeout=300)

    def start_worker(self, name: str, log_port: int | None = None) -> None:
        self.log_ports[name] = log_port or free_port()
        env = {"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.log_ports[name])}
        self.stack.airflow(name, "celery", "worker", "--celery-hostname", f"{name}@%h", env=env)

    def plan(self) -> dict[str, list[dict[str, Any]]]:
        data = self.stack.root / "data"
        data.mkdir()
        plan: dict[str, list[dict[str, Any]]] = {task_id: [] for task_id in TASKS}
        platforms = list(PROFILES)
        for index in range(self.args.files):
            platform = platforms[index % len(platforms)]
            outcome = self.rng.choices(list(OUTCOMES), weights=list(OUTCOMES.values()))[0]
            task_id = "waiting" if self.rng.random() < self.args.waiting_share else "deferred"
            path = data / file_name(index)
            path.write_bytes(b"%PDF-1.4\n% e2e document " + str(index).encode() + b"\n%%EOF\n")
            ref = (task_id, len(plan[task_id]))
            plan[task_id].append(PROFILES[platform].entry(f"{platform}_e2e", outcome, path))
            self.by_key[report.task_key(DAG_ID, RUN_ID, *ref)] = ref
        return plan

    # --- the run ---------------------------------------------------------------------------------

    def run(self) -> None:
        self.configure()
        self.start_emulator()
        self.start_airflow()
        plan = self.plan()
        roots = lambda: {proc.pid: name for name, proc in self.stack.processes.items()}  # noqa: E731
        sampler = PortSampler(int(self.emulator_url.rsplit(":", 1)[1]), roots)
        sampler.start()
        self.api.call(
            "POST",
            f"/dags/{DAG_ID}/dagRuns",
            json_body={"dag_run_id": RUN_ID, "logical_date": None, "conf": {"runs": plan}},
        )
        sizes = ", ".join(f"{len(entries)} {task_id}" for task_id, entries in plan.items())
        self.log(f"triggered {DAG_ID} over {self.args.files} documents ({sizes}) on {', '.join(PROFILES)}")
        try:
            state = self.watch()
        finally:
            sampler.stopping.set()
            sampler.join(timeout=10)
        self.log(f"DAG run finished: {state}")
        self.collect(sampler)

    def watch(self) -> str:
        deadline = time.monotonic() + self.args.timeout
        last_print = last_snapshot = 0.0
        while time.monotonic() < deadline:
            self.stack.check_alive()
            state = str(self.db.query("SELECT state FROM dag_run WHERE run_id = %s", RUN_ID)[0][0])
            states = dict(
                self.db.query(
                    "SELECT state, count(*) FROM task_instance WHERE dag_id = %s AND task_id <> ALL(%s) GROUP BY 1",
                    DAG_ID,
                    ["plan_deferred", "plan_waiting"],
                )
            )
            runs = self.emulator.get("/_emulator/runs").json()
            now = time.monotonic()
            if now - last_print >= 10 or state in ("success", "failed"):
                summary = ", ".join(f"{name} {count}" for name, count in sorted(states.items(), key=str))
                self.log(f"dag run {state}; runs created {len(runs)}; tasks: {summary or 'none yet'}")
                last_print = now
            if now - last_snapshot >= SNAPSHOT_SECONDS:
                self.snapshot()
                last_snapshot = now
            self.disrupt(runs)
            if state in ("success", "failed"):
                return state
            time.sleep(2)
        raise E2EError(f"the DAG run did not finish within {self.args.timeout:.0f} s")

    def disrupt(self, runs: list[dict[str, Any]]) -> None:
        """Each disruption once, as soon as it can test something: triggerer, Celery worker, then Redis."""
        if self.hand_off is None:
            held = chaos.triggers_by_triggerer(self.db)
            victim = max(TRIGGERERS, key=lambda name: len(held.get(self.jobs[name], {})))
            beats = chaos.triggerer_jobs(self.db)
            fresh = all(beats.get(self.jobs[name], HEARTBEAT_FRESH) < HEARTBEAT_FRESH for name in TRIGGERERS)
            if len(held.get(self.jobs[victim], {})) >= 3 and fresh:
                survivor = next(name for name in TRIGGERERS if name != victim)
                self.hand_off = chaos.kill_triggerer(self.stack, self.db, victim, survivor, self.jobs, self.started)
                done = self.hand_off
                self.log(
                    f"{done.killed} killed holding {len(done.held)} triggers: {len(done.moved)} moved to "
                    f"{done.survivor} in {done.seconds:.0f} s; starting triggerer-3"
                )
                self.start_triggerer("triggerer-3")
        if self.worker_kill is None:
            live = {ref_of(run, self.by_key) for run in runs if phase(run) in ("queued", "running")}
            waiting = {
                name: chaos.waiting_on(self.stack, self.db, name, "waiting", live.__contains__) for name in WORKERS
            }
            victim = max(WORKERS, key=lambda name: len(waiting[name]))
            if len(waiting[victim]) >= 2:
                self.worker_kill = chaos.kill_worker(self.stack, victim, waiting[victim], self.started)
                self.log(f"{victim} killed with {len(waiting[victim])} tasks waiting on live runs; starting worker-3")
                self.start_worker("worker-3", self.log_ports[victim])
        elif self.hand_off is not None and self.redis_restart_at is None and self._since(self.worker_kill) > 10:
            self.snapshot()
            self.redis.restart()
            self.redis_restart_at = time.monotonic() - self.started
            self.log("Redis restarted")

    def _since(self, kill: chaos.WorkerKill) -> float:
        return time.monotonic() - self.started - kill.at_seconds

    def snapshot(self) -> None:
        """What lives only while tasks run: trigger rows (kwargs decrypted) and the Redis keyspace."""
        columns, rows = self.db.table("trigger")
        scan_rows(self.trigger_findings, "postgres:trigger", columns, rows, fernet_key=self.stack.fernet_key)
        try:
            for key, value in self.redis.keyspace():
                self.redis_findings.text(f"redis:{key}", value, "redis values")
        except Exception as exc:  # Redis may be restarting: the next snapshot reads it
            self.log(f"Redis keyspace not read: {type(exc).__name__}")

    def collect(self, sampler: PortSampler) -> None:
        """Read everything the checks need, stop every process, then check."""
        summaries = self.emulator.get("/_emulator/runs").json()
        timelines = self.emulator.get(TIMELINES_PATH).json()
        requests = self.emulator.get("/_emulator/requests").json()
        notes = [tuple(note) for note in self.emulator.get(TRAFFIC_PATH).json()]
        stats = self.emulator.get("/_emulator/stats").json()
        self.snapshot()
        dump = self.db.dump(self.stack.root / "airflow.sql")
        tasks = report.read_tasks(self.db, DAG_ID, RUN_ID)
        self.stack.stop()
        self.db.stop()
        out = self.outcome
        report.check(out, summaries, timelines, tasks, self.by_key)
        report.disruptions(out, self.hand_off, self.worker_kill, self.redis_restart_at, tasks)
        report.traffic(out, notes, sampler.owner, stats, self.args)  # type: ignore[arg-type]
        scans = report.Scans(self.key, self.stack, dump, self.db.root / "server.log", self.redis.root)
        scans.run(out, summaries, requests, self.trigger_findings, self.redis_findings)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make e2e-distributed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=300, help="documents, one mapped task each")
    parser.add_argument("--waiting-share", type=float, default=0.4, help="share of documents waited on in a worker")
    parser.add_argument("--worker-concurrency", type=int, default=8, help="task slots of each Celery worker")
    parser.add_argument("--fault-rate", type=float, default=0.1, help="share of API requests the emulator fails")
    parser.add_argument("--rate-limit", type=float, default=6.0, help="the emulator's requests per second per key")
    parser.add_argument("--client-rate", type=float, default=5.0, help="max_requests_per_second of each connection")
    parser.add_argument("--client-timeout", type=float, default=5.0, help="the connections' request timeout")
    parser.add_argument("--processing-seconds", type=float, default=10.0)
    parser.add_argument("--jitter", type=float, default=30.0, help="runs finish up to this much later, at random")
    parser.add_argument("--timeout", type=float, default=2400.0, help="seconds the DAG run may take")
    parser.add_argument("--seed", type=int, default=random.randrange(1_000_000))
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, dump)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_packages()
    root = Path(tempfile.mkdtemp(prefix="flowruns-e2e-distributed-"))
    stack = Stack(root, parallelism=2 * args.worker_concurrency)
    postgres, redis = Postgres(root / "postgres"), Redis(stack, root / "redis")
    run = Distributed(stack, postgres, redis, args)
    print(f"e2e-distributed seed {args.seed}; working in {root}", flush=True)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        postgres.start()
        redis.start()
        run.run()
    except (E2EError, KeyboardInterrupt) as exc:
        run.outcome.problems.append(f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a bug of the run itself: still torn down and reported
        traceback.print_exc()
        run.outcome.problems.append(f"the run broke: {type(exc).__name__}: {exc}")
    finally:
        stack.stop()
        try:
            postgres.stop()
        except E2EError as exc:
            run.outcome.problems.append(f"PostgreSQL did not stop: {exc}")
    ok = not run.outcome.problems
    print("\n".join(["", "e2e-distributed figures:", *(f"  {line}" for line in run.outcome.figures)]))
    if not ok:
        print("\n".join(["", "e2e-distributed FAILED:", *(f"  - {line}" for line in run.outcome.problems)]))
    print(
        f"\ne2e-distributed {'passed' if ok else 'failed'} in {time.monotonic() - run.started:.0f} s (seed {args.seed})"
    )
    if args.keep:
        print(f"kept {root}")
    else:  # a failed run's folder goes too: everything of the run is torn down; --keep keeps it
        shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
