"""``make e2e``: prove under a real Airflow that no run is lost, duplicated, orphaned or mis-reported,
and that the API key is kept nowhere, while the platform fails a fifth of its requests.

Airflow runs on SQLite in a temporary ``AIRFLOW_HOME`` as separate processes (API server, scheduler with
the LocalExecutor, DAG processor, triggerer). The DAG maps a deferrable ``FlowRunOperator`` over the
documents of a plan: platform, and a random outcome per document (succeeded, failed, or stopped for
review, which ``on_review="succeed"`` turns into a successful task). Part-way the triggerer is killed
with SIGKILL and a new one started; later that one is stopped with SIGTERM, as a deploy would, and
replaced again. One worker (task process and its supervisor) is killed right after its start call
reached the platform. The emulator's runs are matched to task instances by the ``airflow_task_key``
each start request carries in the run's metadata.

Prints its figures and exits non-zero on any mismatch. The temporary folder is removed after a clean
run and kept (its path printed) after a failed one.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

from airflow_flowruns.operators.flow_run import task_key
from airflow_flowruns.platforms.extend.emulator import (
    EXTEND_FAILING_WORKFLOW,
    EXTEND_INVOICE_WORKFLOW,
    EXTEND_REVIEW_WORKFLOW,
)
from airflow_flowruns.platforms.start import TASK_KEY_FIELD
from airflow_flowruns.platforms.tableflow.emulator import (
    TABLEFLOW_FAILING_FLOW,
    TABLEFLOW_REVIEW_FLOW,
    TABLEFLOW_SMALL_FILE_FLOW,
)
from e2e.harness import Outcome, common_arguments, conduct, counts, scan_for_key, start_emulator
from e2e.retry_rule import EXPECTED_TASK_STATE, retry_problems, run_of
from e2e.secret_scan import Findings, scan_sqlite
from e2e.stack import AirflowApi, E2EError, Stack, read_only, wait_for
from e2e.worker_kill import MappedTask, WorkerKiller

HERE = Path(__file__).resolve().parent
DAG_FILE = HERE / "dags" / "flowruns_e2e.py"
DAG_ID, TASK_ID, RUN_ID = "flowruns_e2e", "flow_run", "e2e"
OUTCOMES = {"completed": 2, "failed": 1, "review": 1}
"""Random outcomes and their weights. Under on_review="succeed" a run in review makes a successful task."""


@dataclass(frozen=True)
class Profile:
    """What the e2e needs to know of a platform: three flows, one per outcome, and its file argument."""

    flows: Mapping[str, str]
    files: Callable[[Path], dict[str, Any]]


PROFILES: dict[str, Profile] = {
    "tableflow": Profile(
        flows={
            "completed": TABLEFLOW_SMALL_FILE_FLOW,
            "failed": TABLEFLOW_FAILING_FLOW,
            "review": TABLEFLOW_REVIEW_FLOW,
        },
        files=lambda path: {"document": str(path)},
    ),
    "extend": Profile(
        flows={
            "completed": EXTEND_INVOICE_WORKFLOW,
            "failed": EXTEND_FAILING_WORKFLOW,
            "review": EXTEND_REVIEW_WORKFLOW,
        },
        files=lambda path: {"file": str(path)},
    ),
}
"""Noxus is left out: its runs keep no metadata, so a run cannot be matched to the task that started it."""


@dataclass
class TriggererRestart:
    how: str
    at_seconds: float
    pids: list[int]
    deferred: list[int]
    """Map indexes whose triggers ran in the stopped triggerer: only its successor can finish them."""
    runs_created: int


# --- the run -------------------------------------------------------------------------------------


class E2E:
    def __init__(self, stack: Stack, args: argparse.Namespace) -> None:
        self.stack = stack
        self.args = args
        self.key = "sk-e2e-" + secrets.token_hex(16)
        self.rng = random.Random(args.seed)
        self.platforms: list[str] = args.platforms
        self.started = time.monotonic()
        self.outcome = Outcome()
        # Only decrypted kwargs hold the name of a trigger argument: proof they were read in clear.
        self.trigger_findings = Findings(self.key, controls=("poll_interval",))
        self.restarts: list[TriggererRestart] = []
        self.emulator = httpx.Client(timeout=30)
        self.triggerer = "triggerer"
        self.api = AirflowApi(stack.api_url)

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f} s] {message}", flush=True)

    # --- setup -----------------------------------------------------------------------------------

    def start_emulator(self) -> None:
        options = []
        if self.args.fault_rate > 0:
            options += ["--fault-rate", str(self.args.fault_rate), "--fault-seed", str(self.args.seed)]
            options += ["--fault-stall-seconds", str(self.args.stall_seconds)]
        self.emulator_url = start_emulator(self.stack, self.key, options)
        self.emulator.base_url = httpx.URL(f"{self.emulator_url}/_emulator")
        self.log(f"emulator on {self.emulator_url}, fault rate {self.args.fault_rate:.0%}")

    def set_scenarios(self) -> None:
        base = {"processing_seconds": self.args.processing_seconds, "processing_jitter_seconds": self.args.jitter}
        scenarios = {
            "completed": base,
            "failed": {**base, "outcome": "failed", "error": "Extraction failed: e2e says so"},
            "review": {**base, "review": True, "review_seconds": None},
        }
        for platform in self.platforms:
            for outcome, flow_id in PROFILES[platform].flows.items():
                put = self.emulator.put(f"/{platform}/flows/{flow_id}/scenario", json=scenarios[outcome])
                put.raise_for_status()

    def start_airflow(self) -> None:
        shutil.copy(DAG_FILE, self.stack.dags / DAG_FILE.name)
        self.log("migrating the Airflow database")
        self.stack.start_airflow()

        def healthy() -> bool | None:
            self.stack.check_alive()
            return self.api.healthy()

        wait_for("the API server", healthy, timeout=180)
        self.api.login()
        for platform in self.platforms:
            extra = {"timeout": self.args.client_timeout, "retry_min_wait": 0.5, "retry_max_wait": 5}
            self.api.add_connection(f"{platform}_e2e", platform, self.emulator_url, self.key, extra)

        def parsed() -> bool | None:
            self.stack.check_alive()
            response = self.api.http.get(f"/api/v2/dags/{DAG_ID}")
            return True if response.status_code == 200 else None

        wait_for(f"the DAG processor to parse {DAG_ID}", parsed, timeout=180)
        self.log(f"Airflow is up: {self.stack.api_url}")

    def plan(self) -> list[dict[str, Any]]:
        data = self.stack.root / "data"
        data.mkdir()
        runs = []
        for index in range(self.args.files):
            platform = self.platforms[index % len(self.platforms)]
            outcome = self.rng.choices(list(OUTCOMES), weights=list(OUTCOMES.values()))[0]
            path = data / f"doc-{index:03d}.pdf"
            path.write_bytes(b"%PDF-1.4\n% e2e document " + str(index).encode() + b"\n%%EOF\n")
            runs.append(
                {
                    "flowruns_conn_id": f"{platform}_e2e",
                    "flow_id": PROFILES[platform].flows[outcome],
                    "files": PROFILES[platform].files(path),
                }
            )
        return runs

    # --- the run ---------------------------------------------------------------------------------

    def run(self) -> bool:
        self.start_emulator()
        self.set_scenarios()
        self.start_airflow()
        plan = self.plan()
        keys = {_task_key(index): index for index in range(len(plan))}
        # The killer thread gets clients of its own: it must not wait on the main loop's requests.
        killer_api = AirflowApi(self.stack.api_url)
        killer_api.login()
        killer_emulator = httpx.Client(base_url=self.emulator.base_url, timeout=30)
        killer = WorkerKiller(
            killer_emulator,
            killer_api,
            self.stack.processes["scheduler"].pid,
            keys,
            MappedTask(DAG_ID, TASK_ID, RUN_ID),
        )
        self.api.call(
            "POST",
            f"/dags/{DAG_ID}/dagRuns",
            json_body={"dag_run_id": RUN_ID, "logical_date": None, "conf": {"runs": plan}},
        )
        self.log(f"triggered {DAG_ID} over {len(plan)} documents on {', '.join(self.platforms)}")
        killer.start()
        try:
            state = self.watch(killer, len(plan))
        finally:
            killer.stopping.set()
            killer.join(timeout=10)
        if killer.error is not None:
            raise E2EError(f"the worker killer failed: {killer.error!r}")
        self.log(f"DAG run finished: {state}")
        runs = self.emulator.get("/runs").json()
        requests = self.emulator.get("/requests").json()
        stats = self.emulator.get("/stats").json()
        self.stack.stop()
        self.check(plan, runs, killer)
        self.figure_faults(stats)
        self.scan(runs, requests)
        return not self.outcome.problems

    def watch(self, killer: WorkerKiller, total: int) -> str:
        deadline = time.monotonic() + self.args.timeout
        last_print = last_snapshot = 0.0
        while time.monotonic() < deadline:
            self.stack.check_alive()
            state = self.api.call("GET", f"/dags/{DAG_ID}/dagRuns/{RUN_ID}")["state"]
            tasks = self.task_instances()
            states = Counter(str(ti["state"]) for ti in tasks)
            created = self.emulator.get("/stats").json()["runs"]
            now = time.monotonic()
            if now - last_print >= 10 or state in ("success", "failed"):
                summary = ", ".join(f"{name} {count}" for name, count in sorted(states.items()))
                self.log(f"dag run {state}; runs created {created}/{total}; tasks: {summary or 'none yet'}")
                last_print = now
            if now - last_snapshot >= 10 and states["deferred"]:
                self.snapshot_triggers()
                last_snapshot = now
            deferred = [ti["map_index"] for ti in tasks if ti["state"] == "deferred"]
            if not self.restarts and len(deferred) >= max(5, total // 8):
                self.restart_triggerer(graceful=False, deferred=deferred, created=created)
            elif len(self.restarts) == 1 and created >= 0.6 * total and len(deferred) >= 5:
                self.restart_triggerer(graceful=True, deferred=deferred, created=created)
            if state in ("success", "failed"):
                return str(state)
            time.sleep(2)
        raise E2EError(f"the DAG run did not finish within {self.args.timeout:.0f} s")

    def task_instances(self) -> list[dict[str, Any]]:
        path = f"/dags/{DAG_ID}/dagRuns/{RUN_ID}/taskInstances"
        found: list[dict[str, Any]] = self.api.call("GET", path, task_id=TASK_ID, limit=1000)["task_instances"]
        return found

    def snapshot_triggers(self) -> None:
        """Trigger rows go once their tasks resume, so their kwargs are read (decrypted) while they exist."""
        scan_sqlite(
            self.trigger_findings, self.stack.home / "airflow.db", fernet_key=self.stack.fernet_key, tables=["trigger"]
        )

    def restart_triggerer(self, *, graceful: bool, deferred: list[int], created: int) -> None:
        """First as a lost machine (SIGKILL, no cleanup at all), then as a deploy does it (SIGTERM, which
        runs every trigger's cleanup): either way no run may be cancelled and every trigger must resume."""
        self.snapshot_triggers()
        old, new = self.triggerer, f"triggerer-{len(self.restarts) + 2}"
        pids = self.stack.stop_one(old) if graceful else self.stack.kill(old)
        self.stack.airflow(new, "triggerer", "--skip-serve-logs")
        self.triggerer = new
        how = "stopped (SIGTERM)" if graceful else "killed (SIGKILL)"
        self.restarts.append(TriggererRestart(how, time.monotonic() - self.started, pids, deferred, created))
        self.log(f"{old} {how} with {len(deferred)} tasks deferred; started {new}")

    # --- the checks ------------------------------------------------------------------------------

    def check(self, plan: list[dict[str, Any]], runs: list[dict[str, Any]], killer: WorkerKiller) -> None:
        """Match runs to task instances by task key, then compare counts and states."""
        out = self.outcome
        tasks, tries, followed = self.read_tasks()
        phases = {run["id"]: run_of(run).phase for run in runs}

        def phase(run: dict[str, Any]) -> str:
            return phases[run["id"]]

        by_index: dict[int, list[dict[str, Any]]] = {index: [] for index in range(len(plan))}
        strays: list[dict[str, Any]] = []
        for run in runs:
            index = killer.map_index_of.get((run.get("metadata") or {}).get(TASK_KEY_FIELD, ""))
            (strays if index is None else by_index[index]).append(run)
        # The emulator lists runs in the order they were created: a task's last run is the one it ended on.
        several = {index: found for index, found in by_index.items() if len(found) > 1}
        broken = {index: retry_problems(map(run_of, found)) for index, found in several.items()}
        broken = {index: problems for index, problems in broken.items() if problems}
        mismatches, wrong_run = [], []
        for index, found in by_index.items():
            last = found[-1] if found else None
            if last and EXPECTED_TASK_STATE.get(phase(last)) != tasks.get(index):
                mismatches.append(f"map index {index}: task {tasks.get(index)}, run {last['id']} {phase(last)}")
            if last and followed.get(index, last["id"]) != last["id"]:
                wrong_run.append(f"map index {index} follows {followed[index]}, not its run {last['id']}")
        with_runs = sum(1 for found in by_index.values() if found)
        left_running = [run["id"] for run in runs if phase(run) not in EXPECTED_TASK_STATE]
        task_states = Counter(tasks.values())
        platforms = Counter(entry["flowruns_conn_id"].removesuffix("_e2e") for entry in plan)

        out.figure(f"task instances: {len(tasks)} of {len(plan)} ({counts(platforms)})")
        out.figure(f"final task states: {counts(task_states)}")
        out.figure(f"runs created on the emulator: {len(runs)} ({counts(Counter(map(phase, runs)))})")
        out.figure(
            f"runs per task instance: exactly one {with_runs - len(several)}, none {len(plan) - with_runs}, "
            f"more than one {len(several)} (a retry's fresh run after a failed one: {len(several) - len(broken)}); "
            f"runs no task instance started: {len(strays)}"
        )
        out.figure(
            f"task state matches its last run's (on_review=succeed): {with_runs - len(mismatches)} of {with_runs}"
        )
        out.figure(f"tasks whose XCom names another run: {len(wrong_run)}")
        out.figure(f"runs left running that no task follows: {len(left_running)}")
        out.figure(f"task instances that ran more than one try: {sum(1 for t in tries.values() if t > 1)}")
        out.require(len(tasks) == len(plan), f"{len(plan) - len(tasks)} task instances missing")
        out.require(with_runs == len(plan), f"task instances that started no run: {len(plan) - with_runs}")
        out.require(
            not broken,
            "task instances with a run beside a live one, two succeeded runs or a run after one that had not "
            f"failed: {sorted(broken.items())[:10]}",
        )
        out.require(not strays, f"runs that no task instance started: {[r['id'] for r in strays][:10]}")
        out.require(not mismatches, f"task states that differ from their runs: {mismatches[:10]}")
        out.require(not wrong_run, f"tasks that follow another run: {wrong_run[:10]}")
        out.require(not left_running, f"runs left running: {left_running[:10]}")
        out.require(set(task_states) <= {"success", "failed"}, "tasks not in a final state")
        for restart in self.restarts:
            finished = sum(1 for index in restart.deferred if tasks.get(index) in ("success", "failed"))
            out.figure(
                f"triggerer {restart.how} at {restart.at_seconds:.0f} s (pids {restart.pids}), "
                f"{restart.runs_created} runs created; of the {len(restart.deferred)} tasks it held deferred, "
                f"{finished} finished under its successor"
            )
            out.require(finished == len(restart.deferred), f"tasks a {restart.how} triggerer held did not finish")
        out.require(len(self.restarts) == 2, f"the triggerer was restarted {len(self.restarts)} times, not twice")
        kill = killer.kill
        if kill is None:
            out.require(False, f"no worker could be killed right after its start call: {counts(killer.missed)}")
            return
        out.figure(
            f"worker of map index {kill.map_index} killed (SIGKILL, pids {kill.pids}) "
            f"{kill.after_seconds * 1000:.0f} ms after its run {kill.run_id} appeared "
            f"(earlier runs missed: {counts(killer.missed)}); it ran "
            f"{tries.get(kill.map_index)} tries, started {len(by_index[kill.map_index])} run(s), "
            f"ended {tasks.get(kill.map_index)}"
        )
        out.require(tries.get(kill.map_index, 0) >= 2, "the killed task never ran its retry")

    def read_tasks(self) -> tuple[dict[int, str], dict[int, int], dict[int, str]]:
        """State and try number of every mapped task instance, and the run id each pushed to XCom."""
        where = "dag_id = ? AND run_id = ? AND task_id = ?"
        with read_only(self.stack.home / "airflow.db") as db:
            rows = db.execute(
                f"SELECT map_index, state, try_number FROM task_instance WHERE {where}", (DAG_ID, RUN_ID, TASK_ID)
            ).fetchall()
            xcom = db.execute(
                f"SELECT map_index, value FROM xcom WHERE {where} AND key = 'flow_run_id'", (DAG_ID, RUN_ID, TASK_ID)
            ).fetchall()
        tasks = {index: str(state) for index, state, _ in rows}
        tries = {index: int(try_number) for index, _, try_number in rows}
        return tasks, tries, {index: json.loads(value) for index, value in xcom}

    def figure_faults(self, stats: Mapping[str, Any]) -> None:
        faults: dict[str, int] = stats["faults"]
        self.outcome.figure(
            f"emulator: {stats['requests']:,} API requests, {sum(faults.values())} faults injected ({counts(faults)})"
        )
        if self.args.fault_rate > 0:
            self.outcome.require(bool(faults), "the emulator reported no injected faults")

    def scan(self, runs: list[dict[str, Any]], requests: list[dict[str, Any]]) -> None:
        """The key, everywhere: Airflow's home (logs, database), process output, the emulator's logs."""
        scan_for_key(self.outcome, self.key, self.stack, runs, requests, self.trigger_findings)


def _task_key(map_index: int) -> str:
    ti = SimpleNamespace(dag_id=DAG_ID, task_id=TASK_ID, run_id=RUN_ID, map_index=map_index)
    return task_key({"ti": ti})  # type: ignore[typeddict-item]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make e2e", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200, help="documents, one mapped task each")
    parser.add_argument("--platforms", nargs="+", default=list(PROFILES), choices=sorted(PROFILES))
    common_arguments(parser, fault_rate=0.2)
    parser.add_argument("--stall-seconds", type=float, default=8.0, help="how long a stall fault holds an answer")
    parser.add_argument("--client-timeout", type=float, default=5.0, help="the connections' request timeout")
    parser.add_argument("--processing-seconds", type=float, default=10.0)
    parser.add_argument("--jitter", type=float, default=40.0, help="runs finish up to this much later, at random")
    parser.add_argument("--parallelism", type=int, default=8, help="Airflow's [core] parallelism")
    parser.add_argument("--timeout", type=float, default=1500.0, help="seconds the DAG run may take")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="flowruns-e2e-"))
    stack = Stack(root, parallelism=args.parallelism)
    return conduct("e2e", E2E(stack, args), stack, args)


if __name__ == "__main__":
    sys.exit(main())
