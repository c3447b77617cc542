"""``make e2e-watcher``: under a real Airflow, every run started outside Airflow that finishes reaches the
consumer DAG at least once, across a triggerer killed with SIGKILL, and the API key is kept nowhere.

The stack is ``make e2e``'s (SQLite, API server, scheduler with the LocalExecutor, DAG processor,
triggerer; see ``e2e/stack.py``) over the emulator failing a share of its requests and answering 429
beyond a request rate. ``e2e/dags/flowruns_watcher_e2e.py`` watches TableFlow and Extend (every flow of
each connection, succeeded and failed runs) and feeds one consumer DAG, which records every event it
receives. The runner starts runs directly on the emulator, as a person would in the vendor's app,
spread over a few minutes: most succeed, some fail, some stop for review (not watched, so never
announced). Half-way the triggerer is killed with SIGKILL; runs go on finishing while none runs, then a
new triggerer takes the watchers over from their stored positions.

Prints its figures (events, duplicates, runtime) and exits non-zero on any miss.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx

from airflow_flowruns.platforms.extend.emulator import (
    EXTEND_FAILING_WORKFLOW,
    EXTEND_INVOICE_WORKFLOW,
    EXTEND_REVIEW_WORKFLOW,
)
from airflow_flowruns.platforms.tableflow.emulator import (
    TABLEFLOW_FAILING_FLOW,
    TABLEFLOW_REVIEW_FLOW,
    TABLEFLOW_SMALL_FILE_FLOW,
)
from e2e.harness import Outcome, common_arguments, conduct, counts, scan_for_key, start_emulator
from e2e.retry_rule import phases_of
from e2e.secret_scan import Findings, scan_sqlite
from e2e.stack import BIN, AirflowApi, Stack, read_only, wait_for

HERE = Path(__file__).resolve().parent
DAG_FILE = HERE / "dags" / "flowruns_watcher_e2e.py"
DAG_ID = "flowruns_watcher_e2e"
FLOWS = {
    "tableflow": {
        "completed": TABLEFLOW_SMALL_FILE_FLOW,
        "failed": TABLEFLOW_FAILING_FLOW,
        "review": TABLEFLOW_REVIEW_FLOW,
    },
    "extend": {
        "completed": EXTEND_INVOICE_WORKFLOW,
        "failed": EXTEND_FAILING_WORKFLOW,
        "review": EXTEND_REVIEW_WORKFLOW,
    },
}
OUTCOMES = {"completed": 6, "failed": 3, "review": 1}
ANNOUNCED = {"completed": "succeeded", "failed": "failed"}
STRANDED_AFTER_IDLE = 20.0
"""Seconds the consumer stays idle with stored events it has not received before a run is started to carry them."""


class WatcherE2E:
    def __init__(self, stack: Stack, args: argparse.Namespace) -> None:
        self.stack = stack
        self.args = args
        self.key = "sk-e2e-" + secrets.token_hex(16)
        self.rng = random.Random(args.seed)
        self.started = time.monotonic()
        self.outcome = Outcome()
        self.api = AirflowApi(stack.api_url)
        self.emulator = httpx.Client(timeout=30)
        self.out = stack.root / "consumed"
        self.out.mkdir()
        self.stack.env["FLOWRUNS_WATCHER_OUT"] = str(self.out)
        self.trigger_findings = Findings(self.key, controls=("poll_interval",))
        self.started_runs: list[tuple[str, str, str]] = []
        """(platform, run id, planned outcome) of every run started on the emulator."""
        self.stranded: list[int] = []
        """For each run started after the others to carry events stranded in Airflow's asset queue: how many."""

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f} s] {message}", flush=True)

    # --- setup -----------------------------------------------------------------------------------

    def start_emulator(self) -> None:
        options = ["--fault-rate", str(self.args.fault_rate), "--fault-seed", str(self.args.seed)]
        options += ["--fault-stall-seconds", "4", "--rate-limit", str(self.args.rate_limit)]
        self.emulator_url = start_emulator(self.stack, self.key, options)
        self.emulator.base_url = httpx.URL(f"{self.emulator_url}/_emulator")
        base = {"processing_seconds": 5.0, "processing_jitter_seconds": 20.0}
        scenarios = {
            "completed": base,
            "failed": {**base, "outcome": "failed", "error": "e2e says so"},
            "review": {**base, "review": True},
        }
        for platform, flows in FLOWS.items():
            for outcome, flow_id in flows.items():
                self.emulator.put(f"/{platform}/flows/{flow_id}/scenario", json=scenarios[outcome]).raise_for_status()
        self.log(f"emulator on {self.emulator_url}: fault rate {self.args.fault_rate:.0%}, {self.args.rate_limit}/s")

    def start_airflow(self) -> None:
        shutil.copy(DAG_FILE, self.stack.dags / DAG_FILE.name)
        self.stack.run("db-migrate", [str(BIN / "airflow"), "db", "migrate"], timeout=300)
        self.stack.airflow("api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.stack.api_port))

        def healthy() -> bool | None:
            self.stack.check_alive()
            return self.api.healthy()

        wait_for("the API server", healthy, timeout=180)
        self.api.login()
        extra = {"timeout": 3, "retry_min_wait": 0.2, "retry_max_wait": 2, "max_retries": 2}
        for platform in FLOWS:
            self.api.add_connection(f"{platform}_e2e", platform, self.emulator_url, self.key, extra)
        self.stack.airflow("scheduler", "scheduler", "--skip-serve-logs")
        self.stack.airflow("dag-processor", "dag-processor")
        self.stack.airflow("triggerer", "triggerer", "--skip-serve-logs")
        wait_for("both watchers to store their start position", self.positions_stored, timeout=240, interval=1)
        self.log("Airflow is up; both watchers have stored where they start")

    def db(self) -> AbstractContextManager[sqlite3.Connection]:
        return read_only(self.stack.home / "airflow.db")

    def positions_stored(self) -> bool | None:
        self.stack.check_alive()
        try:
            with self.db() as db:
                count = db.execute(
                    "SELECT COUNT(*) FROM asset_state_store WHERE key LIKE 'flowruns_watcher%'"
                ).fetchone()
        except sqlite3.Error:
            return None
        return True if count[0] >= len(FLOWS) else None

    # --- the run ---------------------------------------------------------------------------------

    def start_run(self, platform: str, outcome: str) -> None:
        """Start one run on the emulator, as a person would in the vendor's app."""
        response = self.emulator.post(f"/{platform}/flows/{FLOWS[platform][outcome]}/manual-runs", json={"count": 1})
        response.raise_for_status()
        self.started_runs.append((platform, response.json()["ids"][0], outcome))

    def run(self) -> bool:
        self.start_emulator()
        self.start_airflow()
        every = self.args.minutes * 60 / self.args.runs
        killed_at = restarted_at = None
        for index in range(self.args.runs):
            platform = list(FLOWS)[index % len(FLOWS)]
            self.start_run(platform, self.rng.choices(list(OUTCOMES), weights=list(OUTCOMES.values()))[0])
            if index == self.args.runs // 2:
                self.snapshot_triggers()
                pids = self.stack.kill("triggerer")
                killed_at = time.monotonic() - self.started
                self.log(f"triggerer killed (SIGKILL, pids {pids}) after {index + 1} runs started")
            if killed_at is not None and restarted_at is None and index >= self.args.runs // 2 + self.args.runs // 8:
                self.stack.airflow("triggerer-2", "triggerer", "--skip-serve-logs")
                restarted_at = time.monotonic() - self.started
                self.log(f"triggerer-2 started, {restarted_at - killed_at:.0f} s after the kill")
            if index % 10 == 0:
                self.stack.check_alive()
                self.log(f"{index + 1} runs started; {len(self.consumed())} events consumed so far")
            time.sleep(every)
        self.outcome.figure(
            f"{len(self.started_runs)} runs started on the emulator over {self.args.minutes:.1f} min "
            f"({counts(Counter(o for _, _, o in self.started_runs))}); triggerer killed at {killed_at:.0f} s, "
            f"successor started at {restarted_at:.0f} s"
        )
        self.wait_for_consumer()
        self.snapshot_triggers()
        runs = self.emulator.get("/runs").json()
        requests = self.emulator.get("/requests").json()
        stats = self.emulator.get("/stats").json()
        self.stack.stop()
        self.check(runs, stats)
        self.scan(runs, requests)
        return not self.outcome.problems

    def consumed(self) -> list[dict[str, Any]]:
        found = []
        for path in self.out.glob("*.json"):
            try:
                found.extend(json.loads(path.read_text())["payloads"])
            except ValueError:  # being written
                continue
        return found

    def wait_for_consumer(self) -> None:
        """Until every run that will finish has, and the consumer has seen each, or the bound passes.

        Airflow up to 3.3 can strand asset events in its queue: events that arrive for an asset while its
        queue row waits for the scheduler leave that row's time unchanged, the DAG run it makes takes only
        events up to that time, and the rest wait for the asset's next event (apache/airflow#56050). Once
        every finished run is stored as an asset event and the consumer is idle with events left over, one
        more run is started outside Airflow, as the next document would be, and its event carries them.
        """
        deadline = time.monotonic() + self.args.settle
        idle_since: float | None = None
        while True:
            self.stack.check_alive()
            finished = sum(1 for _, _, o in self.started_runs if o in ANNOUNCED)
            expected = expected_keys(self.emulator.get("/runs").json())
            seen = {payload["dedup_key"] for payload in self.consumed()}
            if len(expected) == finished and expected <= seen:
                self.log("consumer caught up")
                return
            if len(expected) == finished and self.left_waiting(expected):
                idle_since = idle_since or time.monotonic()
            else:
                idle_since = None
            if idle_since is not None and time.monotonic() - idle_since >= STRANDED_AFTER_IDLE:
                stranded = len(expected - seen)
                self.stranded.append(stranded)
                self.start_run("tableflow", "completed")
                self.log(f"{stranded} stored events wait in Airflow's asset queue; one more run started to carry them")
                idle_since = None
            if time.monotonic() > deadline:
                self.outcome.problems.append(
                    f"gave up after {self.args.settle:.0f} s waiting for the consumer DAG to receive every finished run"
                )
                self.log("consumer did not catch up")
                return
            time.sleep(2)

    def left_waiting(self, expected: set[str]) -> bool:
        """Every run in ``expected`` stored as an asset event, and the consumer idle: no DAG run queued or
        running, nothing in the asset queue for it (a database busy with a write counts as not idle)."""
        try:
            return expected <= self.stored_keys() and self.consumer_idle()
        except sqlite3.Error:
            return False

    def stored_keys(self) -> set[str]:
        """The dedup key of every asset event Airflow stored (what the watchers announced)."""
        with self.db() as db:
            extras = db.execute("SELECT extra FROM asset_event").fetchall()
        return {json.loads(extra)["payload"]["dedup_key"] for (extra,) in extras if extra and "payload" in extra}

    def consumer_idle(self) -> bool:
        with self.db() as db:
            active = db.execute(
                "SELECT COUNT(*) FROM dag_run WHERE dag_id = ? AND state IN ('queued', 'running')", (DAG_ID,)
            ).fetchone()[0]
            queued = db.execute("SELECT COUNT(*) FROM asset_dag_run_queue WHERE target_dag_id = ?", (DAG_ID,))
            return active == 0 and queued.fetchone()[0] == 0

    def snapshot_triggers(self) -> None:
        scan_sqlite(
            self.trigger_findings, self.stack.home / "airflow.db", fernet_key=self.stack.fernet_key, tables=["trigger"]
        )

    # --- the checks ------------------------------------------------------------------------------

    def check(self, runs: list[dict[str, Any]], stats: dict[str, Any]) -> None:
        out = self.outcome
        consumed = self.consumed()
        keys = Counter(payload["dedup_key"] for payload in consumed)
        expected = expected_keys(runs)
        started_ids = {run_id for _, run_id, _ in self.started_runs}
        review_ids = {run_id for _, run_id, o in self.started_runs if o == "review"}
        missing = expected - set(keys)
        unexpected = set(keys) - expected
        duplicates = {key: count for key, count in keys.items() if count > 1}
        with self.db() as db:
            asset_events = db.execute("SELECT COUNT(*) FROM asset_event").fetchone()[0]
            dag_runs = db.execute("SELECT state, COUNT(*) FROM dag_run WHERE dag_id = ? GROUP BY state", (DAG_ID,))
            dag_run_states = dict(dag_runs.fetchall())
        out.figure(
            f"runs finished in a watched state: {len(expected)}; left in review (not watched): {len(review_ids)}"
        )
        out.figure(
            f"events consumed: {len(consumed)} ({len(keys)} distinct dedup keys) in {sum(dag_run_states.values())} "
            f"consumer DAG runs ({counts({str(k): v for k, v in dag_run_states.items()})}); "
            f"asset events: {asset_events}"
        )
        out.figure(
            f"duplicates: {sum(duplicates.values()) - len(duplicates)} extra announcements of {len(duplicates)} runs"
            + (f" (e.g. {next(iter(duplicates))})" if duplicates else "")
        )
        out.figure(f"finished runs that never reached the consumer: {len(missing)}")
        out.figure(
            f"events stranded in Airflow's asset queue once the runs stopped: {sum(self.stranded)}, carried by "
            f"{len(self.stranded)} more runs started for it"
        )
        out.figure(
            f"emulator: {stats['requests']:,} API requests, faults injected: {counts(stats['faults'])}, "
            f"answered 429: {stats['rate_limited']}"
        )
        never_stored = missing - self.stored_keys()
        out.require(not never_stored, f"finished runs never announced: {sorted(never_stored)[:10]}")
        out.require(
            not missing - never_stored,
            f"announced runs that never reached the consumer: {sorted(missing - never_stored)[:10]}",
        )
        out.require(not unexpected, f"announcements of runs that did not finish so: {sorted(unexpected)[:10]}")
        out.require(
            all(payload["run_id"] in started_ids for payload in consumed), "events for runs the e2e did not start"
        )
        out.require(
            all(payload["task_key"] is None for payload in consumed), "a run started outside Airflow has a task key"
        )
        out.require(len(self.started_runs) == self.args.runs + len(self.stranded), "not every run was started")
        out.require(not dag_run_states.get("failed"), f"consumer DAG runs failed: {dag_run_states.get('failed')}")
        if self.args.fault_rate > 0:
            out.require(bool(stats["faults"]), "the emulator reported no injected faults")

    def scan(self, runs: list[dict[str, Any]], requests: list[dict[str, Any]]) -> None:
        scan_for_key(self.outcome, self.key, self.stack, runs, requests, self.trigger_findings, folders=(self.out,))


def expected_keys(runs: list[dict[str, Any]]) -> set[str]:
    """The dedup key of every run that finished in a watched state, as the emulator says it ended."""
    phases = phases_of()
    return {
        f"{run['platform']}:{run['id']}:{ANNOUNCED[phases[run['platform']][run['status']]]}"
        for run in runs
        if phases[run["platform"]].get(run["status"]) in ANNOUNCED
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make e2e-watcher", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="runs started outside Airflow")
    parser.add_argument("--minutes", type=float, default=2.5, help="over how long they are started")
    common_arguments(parser, fault_rate=0.1)
    parser.add_argument("--rate-limit", type=float, default=20.0, help="requests per second before a 429")
    parser.add_argument("--settle", type=float, default=300.0, help="seconds the consumer may take to catch up")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stack = Stack(Path(tempfile.mkdtemp(prefix="flowruns-e2e-watcher-")), parallelism=4)
    return conduct("e2e-watcher", WatcherE2E(stack, args), stack, args)


if __name__ == "__main__":
    sys.exit(main())
