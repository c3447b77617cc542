"""``make e2e-backfill``: prove under a real Airflow that a batch task runs each document of a folder, glob or
list to the runs the retry rule allows and no more, reports each as the platform has it, and keeps the API key
nowhere, while the platform fails a share of its requests, a worker dies mid-submission and a triggerer dies.

The stack is ``make e2e``'s (SQLite, API server, scheduler with the LocalExecutor, DAG processor,
triggerer; see ``e2e/stack.py``) over the emulator in fault mode. One DAG run of
``e2e/dags/flowruns_backfill_e2e.py`` holds three deferrable ``FlowRunBatchOperator`` tasks, TableFlow,
Extend and Noxus, over ``--documents`` small files in the temporary folder. The plan (``e2e/backfill_plan.py``)
makes some documents fail on the platform, once or every time, and some stop for review, so each task's
first try fails for its failed documents and its retry runs exactly those again. Once a third of the
TableFlow documents have a run, that task's worker is killed with SIGKILL while it is still starting runs;
once a batch task is deferred, the triggerer is killed with SIGKILL and a new one started.

The checks (``e2e/backfill_checks.py``) read the emulator's record of every run and Airflow's database,
XCom and manifests. Prints its figures and exits non-zero on any mismatch; the temporary folder is kept
(its path printed) after a failed run.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from airflow_flowruns.operators.batch import BATCH_XCOM_KEY
from airflow_flowruns.platforms.start import TASK_KEY_FIELD
from e2e.backfill_checks import TaskRecord, check_documents, check_task, figure_requests, match
from e2e.backfill_plan import OutcomeScript, Plan, make_plan
from e2e.dags.flowruns_backfill_e2e import DAG_ID, TASKS
from e2e.harness import Outcome, common_arguments, conduct, counts, scan_for_key, start_emulator
from e2e.secret_scan import Findings, scan_sqlite
from e2e.stack import AirflowApi, E2EError, Stack, read_only, wait_for
from e2e.worker_kill import MappedTask, WorkerKiller

HERE = Path(__file__).resolve().parent
DAG_FILE = HERE / "dags" / "flowruns_backfill_e2e.py"
RUN_ID = "backfill"
LISTING_INTERVAL = 0.5
"""Seconds between two reads of the emulator's runs (a listing of every run: kept rare, the emulator shares the
machine)."""
KILLED = TASKS[0]
"""The task whose worker is killed mid-submission: TableFlow, which starts one run per call."""


class SubmissionKiller(WorkerKiller):
    """Kills the worker of ``KILLED`` once ``threshold`` of its runs exist on the platform, while its first try
    is still starting runs: the try dies with a ledger page noted as starting and never confirmed."""

    def __init__(self, emulator: httpx.Client, api: AirflowApi, scheduler_pid: int, threshold: int) -> None:
        super().__init__(emulator, api, scheduler_pid, {}, MappedTask(DAG_ID, KILLED.task_id, RUN_ID))
        self.threshold = threshold
        self.runs_at_kill = 0

    def _watch(self) -> None:
        listed = 0
        while not self.stopping.is_set() and self.kill is None:
            total = self.emulator.get("/stats").json()["runs"]
            if total > listed:
                listed = total
                runs = [run for run in self.emulator.get("/runs").json() if run["flow_id"] == KILLED.flow_id]
                if len(runs) >= self.threshold:
                    # Not mapped: every run of the task belongs to map index -1.
                    self.map_index_of = {(runs[-1].get("metadata") or {}).get(TASK_KEY_FIELD, ""): -1}
                    self._spotted(runs[-1], time.monotonic())
                    self.runs_at_kill = len(runs) if self.kill else 0
            time.sleep(LISTING_INTERVAL)


class BackfillE2E:
    def __init__(self, stack: Stack, args: argparse.Namespace) -> None:
        self.stack = stack
        self.args = args
        self.key = "sk-e2e-" + secrets.token_hex(16)
        self.rng = random.Random(args.seed)
        self.started = time.monotonic()
        self.outcome = Outcome()
        self.api = AirflowApi(stack.api_url)
        self.emulator = httpx.Client(timeout=30)
        self.trigger_findings = Findings(self.key, controls=("poll_interval",))
        self.triggerer = "triggerer"
        self.triggerer_kill: tuple[float, list[str]] | None = None
        """When the triggerer was killed, and the tasks then deferred."""

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f} s] {message}", flush=True)

    # --- setup -----------------------------------------------------------------------------------

    def start_emulator(self) -> str:
        options = ["--fault-rate", str(self.args.fault_rate), "--fault-seed", str(self.args.seed)]
        options += ["--fault-stall-seconds", str(self.args.stall_seconds)]
        url = start_emulator(self.stack, self.key, options)
        self.emulator.base_url = httpx.URL(f"{url}/_emulator")
        scenario = {"processing_seconds": self.args.processing_seconds, "processing_jitter_seconds": self.args.jitter}
        for batch in TASKS:
            self.emulator.put(f"/{batch.platform}/flows/{batch.flow_id}/scenario", json=scenario).raise_for_status()
        self.log(f"emulator on {url}, fault rate {self.args.fault_rate:.0%}")
        return url

    def start_airflow(self, emulator_url: str) -> None:
        shutil.copy(DAG_FILE, self.stack.dags / DAG_FILE.name)
        self.log("migrating the Airflow database")
        self.stack.start_airflow()
        wait_for("the API server", self.healthy, timeout=180)
        self.api.login()
        extra = {"timeout": self.args.client_timeout, "retry_min_wait": 0.5, "retry_max_wait": 5}
        for batch in TASKS:
            self.api.add_connection(batch.conn_id, batch.platform, emulator_url, self.key, extra)
        wait_for(f"the DAG processor to parse {DAG_ID}", self.parsed, timeout=180)
        self.log(f"Airflow is up: {self.stack.api_url}")

    def healthy(self) -> bool | None:
        self.stack.check_alive()
        return self.api.healthy()

    def parsed(self) -> bool | None:
        self.stack.check_alive()
        return True if self.api.http.get(f"/api/v2/dags/{DAG_ID}").status_code == 200 else None

    # --- the run ---------------------------------------------------------------------------------

    def run(self) -> bool:
        self.start_airflow(self.start_emulator())
        plan = make_plan(self.stack.root, self.args.documents, self.rng)
        script = OutcomeScript(httpx.Client(base_url=self.emulator.base_url, timeout=30), plan)
        killer_api = AirflowApi(self.stack.api_url)
        killer_api.login()
        killer = SubmissionKiller(
            httpx.Client(base_url=self.emulator.base_url, timeout=30),
            killer_api,
            self.stack.processes["scheduler"].pid,
            threshold=max(1, len(plan.of(KILLED.platform)) // 3),
        )
        body = {"dag_run_id": RUN_ID, "logical_date": None, "conf": plan.conf}
        self.api.call("POST", f"/dags/{DAG_ID}/dagRuns", json_body=body)
        self.log(f"triggered {DAG_ID} over {len(plan.documents)} documents")
        script.start()
        killer.start()
        try:
            state = self.watch(killer)
        finally:
            script.stopping.set()
            killer.stopping.set()
            script.join(timeout=10)
            killer.join(timeout=10)
        for thread in (script, killer):
            if thread.error is not None:
                raise E2EError(f"the {thread.name} thread failed: {thread.error!r}")
        self.log(f"DAG run finished: {state}")
        script.play()
        runs = self.emulator.get("/runs").json()
        requests = self.emulator.get("/requests").json()
        stats = self.emulator.get("/stats").json()
        self.stack.stop()
        for name, records in (("runs", runs), ("requests", requests)):  # for a post-mortem of a kept folder
            (self.stack.root / f"emulator-{name}.json").write_text(json.dumps(records, indent=1))
        self.check(plan, runs, script, killer, stats)
        figure_requests(self.outcome, plan, requests)
        scan_for_key(self.outcome, self.key, self.stack, runs, requests, self.trigger_findings, folders=(plan.outputs,))
        return not self.outcome.problems

    def watch(self, killer: SubmissionKiller) -> str:
        deadline = time.monotonic() + self.args.timeout
        last_print = last_snapshot = 0.0
        while time.monotonic() < deadline:
            self.stack.check_alive()
            state = self.api.call("GET", f"/dags/{DAG_ID}/dagRuns/{RUN_ID}")["state"]
            found = self.api.call("GET", f"/dags/{DAG_ID}/dagRuns/{RUN_ID}/taskInstances")["task_instances"]
            tasks = {ti["task_id"]: f"{ti['state']} (try {ti['try_number']})" for ti in found}
            deferred = sorted(ti["task_id"] for ti in found if ti["state"] == "deferred")
            now = time.monotonic()
            if now - last_print >= 10 or state in ("success", "failed"):
                created = self.emulator.get("/stats").json()["runs"]
                summary = ", ".join(f"{task} {tstate}" for task, tstate in sorted(tasks.items()))
                self.log(f"dag run {state}; runs created {created}; {summary or 'no task yet'}")
                last_print = now
            if deferred and now - last_snapshot >= 10:
                self.snapshot_triggers()
                last_snapshot = now
            if self.triggerer_kill is None and deferred and (killer.kill or not killer.is_alive()):
                self.kill_triggerer(deferred)
            if state in ("success", "failed"):
                return str(state)
            time.sleep(2)
        raise E2EError(f"the DAG run did not finish within {self.args.timeout:.0f} s")

    def snapshot_triggers(self) -> None:
        """Trigger rows go once their tasks resume, so their kwargs are read (decrypted) while they exist."""
        with_key = self.stack.fernet_key
        scan_sqlite(self.trigger_findings, self.stack.home / "airflow.db", fernet_key=with_key, tables=["trigger"])

    def kill_triggerer(self, deferred: list[str]) -> None:
        self.snapshot_triggers()
        pids = self.stack.kill(self.triggerer)
        self.triggerer = "triggerer-2"
        self.stack.airflow(self.triggerer, "triggerer", "--skip-serve-logs")
        self.triggerer_kill = (time.monotonic() - self.started, deferred)
        self.log(f"triggerer killed (SIGKILL, pids {pids}) with {', '.join(deferred)} deferred; started triggerer-2")

    # --- the checks ------------------------------------------------------------------------------

    def check(
        self,
        plan: Plan,
        runs: list[dict[str, Any]],
        script: OutcomeScript,
        killer: SubmissionKiller,
        stats: dict[str, Any],
    ) -> None:
        out = self.outcome
        records = self.read_tasks(plan)
        matched = match(plan, runs)
        check_documents(out, plan, matched, {batch.platform: records[batch.task_id].tries for batch in TASKS})
        for batch in TASKS:
            check_task(out, batch, plan, matched, records[batch.task_id])
        out.figure(
            f"runs the plan forced: {counts(Counter(script.forced.values()))}; ended before it could: "
            f"{len(script.late)}"
        )
        out.require(not script.late, f"runs that ended before the plan could force them: {script.late[:10]}")
        kill = killer.kill
        if kill is None:
            out.require(False, f"{KILLED.task_id}'s worker was never killed mid-submission: {counts(killer.missed)}")
        else:
            documents = len(plan.of(KILLED.platform))
            out.figure(
                f"{KILLED.task_id}'s worker killed (SIGKILL, pids {kill.pids}) with {killer.runs_at_kill} of its "
                f"{documents} documents' runs on the platform (missed chances: {counts(killer.missed)})"
            )
            out.require(killer.runs_at_kill < documents, "the worker was killed after every run had started")
            out.require(records[KILLED.task_id].tries >= 2, f"{KILLED.task_id} never ran the try after the kill")
        if self.triggerer_kill is None:
            out.require(False, "the triggerer was never killed while a batch task was deferred")
        else:
            at, deferred = self.triggerer_kill
            ended = [task for task in deferred if records[task].state in ("success", "failed")]
            out.figure(
                f"triggerer killed (SIGKILL) at {at:.0f} s holding {', '.join(deferred)}; "
                f"{len(ended)} of them ended under its successor"
            )
            out.require(len(ended) == len(deferred), "tasks the killed triggerer held never ended")
        faults = stats["faults"]
        out.figure(f"emulator: {stats['requests']:,} API requests, {sum(faults.values())} faults ({counts(faults)})")
        if self.args.fault_rate > 0:
            out.require(bool(faults), "the emulator reported no injected faults")

    def read_tasks(self, plan: Plan) -> dict[str, TaskRecord]:
        """State, tries, XCom summary and manifest of every batch task, from Airflow's database and the files."""
        where = "dag_id = ? AND run_id = ?"
        with read_only(self.stack.home / "airflow.db") as db:
            rows = db.execute(
                f"SELECT task_id, state, try_number, start_date FROM task_instance WHERE {where}", (DAG_ID, RUN_ID)
            ).fetchall()
            history = db.execute(
                f"SELECT task_id, try_number, state, start_date FROM task_instance_history WHERE {where}",
                (DAG_ID, RUN_ID),
            ).fetchall()
            xcom = dict(
                db.execute(
                    f"SELECT task_id, value FROM xcom WHERE {where} AND key = ?", (DAG_ID, RUN_ID, BATCH_XCOM_KEY)
                )
            )
        records = {}
        for task_id, state, tries, started in rows:
            record = TaskRecord(str(state), int(tries), {int(tries): str(state)}, {int(tries): _unix(started)})
            for other, number, try_state, try_started in history:
                if other == task_id and number != tries:
                    record.try_states[int(number)] = str(try_state)
                    record.try_started[int(number)] = _unix(try_started)
            record.summary = _json(xcom.get(task_id))
            records[task_id] = record
        for batch in TASKS:
            record = records.setdefault(batch.task_id, TaskRecord("missing", 0))
            place = plan.conf[batch.platform]
            record.manifest_path = (
                Path(place["outputs_to"]) / "_MANIFEST.json" if batch.lands_outputs else Path(place["manifest_to"])
            )
            record.manifest = _json(record.manifest_path.read_text()) if record.manifest_path.exists() else None
        return records


def _unix(stamp: str | None) -> float:
    """Unix time of a date Airflow stored in SQLite (UTC, with or without its offset)."""
    if not stamp:
        return float("nan")
    moment = datetime.fromisoformat(stamp)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _json(value: str | bytes | None) -> dict[str, Any] | None:
    try:
        found = json.loads(value) if value else None
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make e2e-backfill", description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=1000, help="documents in all, split over the three tasks")
    common_arguments(parser, fault_rate=0.1)
    parser.add_argument("--stall-seconds", type=float, default=4.0, help="how long a stall fault holds an answer")
    parser.add_argument("--client-timeout", type=float, default=3.0, help="the connections' request timeout")
    parser.add_argument("--processing-seconds", type=float, default=10.0)
    parser.add_argument("--jitter", type=float, default=20.0, help="runs finish up to this much later, at random")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds the DAG run may take")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stack = Stack(Path(tempfile.mkdtemp(prefix="flowruns-e2e-backfill-")), parallelism=8)
    return conduct("e2e-backfill", BackfillE2E(stack, args), stack, args)


if __name__ == "__main__":
    sys.exit(main())
