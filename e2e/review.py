"""``make e2e-review``: prove under a real Airflow that a run in review becomes a Required Action that decides
its task, whether a person answers it in Airflow, the review ends in the vendor's app, or both at once, and
that no Required Action is left open and no task runs a second run.

The stack is ``make e2e``'s (SQLite, API server, scheduler with the LocalExecutor, DAG processor, triggerer;
see ``e2e/stack.py``) over the emulator, whose review flows keep their runs in review until moved. One DAG
run of ``e2e/dags/flowruns_review_e2e.py`` maps ``FlowRunOperator(on_review="airflow")`` over ``--runs``
documents on TableFlow, Extend and Noxus (``e2e/review_plan.py``). Once every Required Action is open, the
runner answers them through Airflow's REST API as the UI does (accept, accept with edits, reject, wait),
forces the final status of others through the emulator's control API (the review ended in the vendor's
app), and does both at once for some, two threads released together. Before the last few are answered it
opens Airflow's Required Actions page in headless Chromium (``e2e/ui.py``'s browser) and one of them, with
screenshots in ``ui-screenshots/review/``.

The checks (``e2e/review_checks.py``) read Airflow's database, logs, XCom and Required Actions, the landed
``outputs.json`` files and the emulator's record of every run. Prints its figures and exits non-zero naming
every failed check; the temporary folder is kept (its path printed) after a failed run.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from selenium.common.exceptions import WebDriverException

from airflow_flowruns.platforms.extend.emulator import EXTEND_INVOICE_WORKFLOW
from e2e.dags.flowruns_review_e2e import DAG_ID
from e2e.harness import Outcome, common_arguments, conduct, counts, scan_for_key, start_emulator
from e2e.review_checks import (
    Action,
    Records,
    check_cases,
    check_items,
    check_required_actions,
    check_runs,
    document_of,
    read_records,
)
from e2e.review_plan import HELD_BACK, MIN_RUNS, PROFILES, Case, bound, conf_of, make_plan
from e2e.secret_scan import Findings, scan_sqlite
from e2e.stack import AirflowApi, E2EError, Stack, wait_for
from e2e.statsd import StatsdListener, check_metrics
from e2e.ui import browser

ROOT = Path(__file__).resolve().parent.parent
DAG_FILE = Path(__file__).resolve().parent / "dags" / "flowruns_review_e2e.py"
RUN_ID = "review"
SCREENSHOTS = ROOT / "ui-screenshots" / "review"
HITL = f"/dags/{DAG_ID}/dagRuns/{RUN_ID}/hitlDetails"
TASK_INSTANCES = f"/dags/{DAG_ID}/dagRuns/{RUN_ID}/taskInstances"
SETTLED_SECONDS = 10.0
ANSWER_ATTEMPTS = 5
"""A person's answer sent again (as a person clicks again) when Airflow on SQLite refused it as a lost write."""
"""How old the newest Required Action is before the first answer: Airflow 3.3 fails a deferred task resumed
before the scheduler heard that its worker exited on deferral (apache/airflow#72716), and an answer resumes the
task at once."""
WAITING = "deferred"
"""The state of a task instance waiting for its review, deferrable or not: Airflow serves reads and answers of a
Required Action to the triggerer only."""


class ReviewE2E:
    def __init__(self, stack: Stack, args: argparse.Namespace) -> None:
        self.stack = stack
        self.args = args
        self.key = "sk-e2e-" + secrets.token_hex(16)
        self.started = time.monotonic()
        self.outcome = Outcome()
        self.api = AirflowApi(stack.api_url)
        self.emulator = httpx.Client(timeout=30)
        self.trigger_findings = Findings(self.key, controls=("poll_interval",))
        self.statsd = StatsdListener()
        self.cases = make_plan(args.runs)
        self.actions: dict[str, Action] = {case.document: Action() for case in self.cases}
        self.ui_problems: list[str] = []
        self.timings: dict[str, float] = {}

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f} s] {message}", flush=True)

    def mark(self, name: str) -> None:
        self.timings[name] = time.monotonic() - self.started

    # --- setup -----------------------------------------------------------------------------------

    def start_emulator(self) -> str:
        options = ["--fault-rate", str(self.args.fault_rate), "--fault-seed", str(self.args.seed)]
        url = start_emulator(self.stack, self.key, options)
        self.emulator.base_url = httpx.URL(f"{url}/_emulator")
        for platform, profile in PROFILES.items():
            seconds = self.args.processing_seconds if platform == "extend" else 0.0
            scenario = {"processing_seconds": seconds, "review": True, "review_seconds": None}
            self.emulator.put(f"/{platform}/flows/{profile.review_flow}/scenario", json=scenario).raise_for_status()
        plain = {"processing_seconds": self.args.processing_seconds}
        self.emulator.put(f"/extend/flows/{EXTEND_INVOICE_WORKFLOW}/scenario", json=plain).raise_for_status()
        self.log(f"emulator on {url}")
        return url

    def start_airflow(self, emulator_url: str) -> None:
        shutil.copy(DAG_FILE, self.stack.dags / DAG_FILE.name)
        self.log("migrating the Airflow database")
        self.stack.env.update(self.statsd.environment())
        self.statsd.__enter__()
        self.stack.start_airflow()
        wait_for("the API server", self.healthy, timeout=180)
        self.api.login()
        for platform in PROFILES:
            self.api.add_connection(f"{platform}_e2e", platform, emulator_url, self.key, {"retry_max_wait": 5})
        wait_for(f"the DAG processor to parse {DAG_ID}", self.parsed, timeout=180)
        self.mark("airflow up")
        self.log(f"Airflow is up: {self.stack.api_url}")

    def healthy(self) -> bool | None:
        self.stack.check_alive()
        return self.api.healthy()

    def client(self) -> AirflowApi:
        """Another client of the REST API with the same token, for a thread of its own."""
        api = AirflowApi(self.stack.api_url)
        api.http.headers["Authorization"] = self.api.http.headers["Authorization"]
        return api

    def parsed(self) -> bool | None:
        self.stack.check_alive()
        return True if self.api.http.get(f"/api/v2/dags/{DAG_ID}").status_code == 200 else None

    # --- the run ---------------------------------------------------------------------------------

    def run(self) -> bool:
        self.start_airflow(self.start_emulator())
        landed = self.stack.root / "landed"
        conf = conf_of(self.cases, self.stack.root / "data", landed)
        self.api.call(
            "POST", f"/dags/{DAG_ID}/dagRuns", json_body={"dag_run_id": RUN_ID, "logical_date": None, "conf": conf}
        )
        self.log(f"triggered {DAG_ID}: {counts(Counter(c.task_id for c in self.cases))}")
        items = wait_for("every Required Action to open", self.all_open, timeout=self.args.timeout, interval=2)
        self.mark("all open")
        self.log(
            f"{len(items)} Required Actions open; {self.emulator.get('/stats').json()['runs']} runs on the emulator"
        )
        self.snapshot_triggers()
        run_ids = self.run_ids()
        newest = max(datetime.fromisoformat(item["created_at"]).timestamp() for item in items.values())
        time.sleep(max(0.0, newest + SETTLED_SECONDS - time.time()))
        first = [case for case in self.cases if case.task_id not in HELD_BACK]
        self.act(first, items, run_ids)
        self.log(f"answered or forced {len(first)}; checking the UI with {len(self.cases) - len(first)} still open")
        self.check_ui(items, run_ids)
        self.act([case for case in self.cases if case.task_id in HELD_BACK], items, run_ids)
        self.mark("all acted")
        state = wait_for("the DAG run to end", self.dag_run_ended, timeout=self.args.timeout, interval=2)
        self.mark("dag run ended")
        self.log(f"DAG run finished: {state}")
        self.check_all(landed)
        return not self.outcome.problems

    def check_all(self, landed: Path) -> None:
        """Read what the API and the emulator hold, stop the stack, then check it and scan it for the key."""
        runs = self.emulator.get("/runs").json()
        requests = self.emulator.get("/requests").json()
        items = self.items()
        unmapped = {ti["task_id"]: ti["state"] for ti in self.task_instances() if ti["map_index"] < 0}
        still_open = self.api.call("GET", "/dags/~/dagRuns/~/hitlDetails", response_received=False)["total_entries"]
        self.stack.stop()
        self.statsd.__exit__()
        check_metrics(self.outcome, self.statsd, runs, {platform: f"{platform}_e2e" for platform in PROFILES})
        (self.stack.root / "emulator-runs.json").write_text(json.dumps(runs, indent=1))
        self.check(read_records(self.stack.home, DAG_ID, RUN_ID), items, int(still_open), runs)
        out = self.outcome
        out.figure(f"the tasks around them (plans, the batch, its hand-off): {counts(Counter(unmapped.values()))}")
        failed = {task: state for task, state in unmapped.items() if state != "success"}
        out.require(not failed, f"tasks around the reviews that did not succeed: {failed}")
        hitl = Findings(self.key, controls=("Accept the extraction",))
        scan_sqlite(hitl, self.stack.home / "airflow.db", tables=["hitl_detail", "xcom"])
        out.figure(f"secret scan of the Required Actions and XCom: {hitl.summary()}")
        out.require(hitl.control_hits["Accept the extraction"] > 0, "the scan never read a Required Action")
        out.require(not hitl.hits, "the API key was found in a Required Action or XCom")
        scan_for_key(out, self.key, self.stack, runs, requests, self.trigger_findings, folders=(landed,))

    def items(self, **filters: Any) -> dict[tuple[str, int], dict[str, Any]]:
        found = self.api.call("GET", HITL, limit=1000, **filters)["hitl_details"]
        return {(item["task_instance"]["task_id"], item["task_instance"]["map_index"]): item for item in found}

    def all_open(self) -> dict[tuple[str, int], dict[str, Any]] | None:
        """Every case's Required Action, once each is open and its task waits for it, deferred."""
        self.stack.check_alive()
        ended = [
            f"{ti['task_id']}[{ti['map_index']}] {ti['state']}"
            for ti in self.task_instances()
            if ti["map_index"] >= 0 and ti["state"] in ("success", "failed", "upstream_failed", "up_for_retry")
        ]
        if ended:
            raise E2EError(f"tasks ended before their review was answered: {ended[:10]}")
        items = self.items()
        self.cases = [bound(case, items) for case in self.cases]
        waiting = [
            case
            for case in self.cases
            if (item := items.get((case.task_id, case.map_index))) is not None
            and not item["response_received"]
            and item["task_instance"]["state"] == WAITING
        ]
        if time.monotonic() - self.timings.get("progress", 0.0) >= 10:
            self.timings["progress"] = time.monotonic()
            self.log(f"{len(items)} Required Actions, {len(waiting)} of {len(self.cases)} cases waiting on theirs")
        return items if len(waiting) == len(self.cases) else None

    def task_instances(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api.call("GET", TASK_INSTANCES, limit=1000)["task_instances"]
        return found

    def run_ids(self) -> dict[str, str]:
        """The emulator's run of every document (each document's name is its own)."""
        return {document_of(run): run["id"] for run in self.emulator.get("/runs").json()}

    def dag_run_ended(self) -> str | None:
        """The DAG run's final state; fails at once when a task began another try (its review would be asked
        again, and no one answers it)."""
        self.stack.check_alive()
        again = [f"{ti['task_id']}[{ti['map_index']}]" for ti in self.task_instances() if ti["try_number"] > 1]
        if again:
            raise E2EError(f"tasks that began another try: {again[:10]}")
        state = self.api.call("GET", f"/dags/{DAG_ID}/dagRuns/{RUN_ID}")["state"]
        return str(state) if state in ("success", "failed") else None

    def snapshot_triggers(self) -> None:
        """Trigger rows go once their tasks resume, so their kwargs are read (decrypted) while they exist."""
        scan_sqlite(
            self.trigger_findings, self.stack.home / "airflow.db", fernet_key=self.stack.fernet_key, tables=["trigger"]
        )

    # --- the moves -------------------------------------------------------------------------------

    def act(self, cases: list[Case], items: dict[tuple[str, int], dict[str, Any]], run_ids: dict[str, str]) -> None:
        """Answer, force or both, each case as planned; the races each in two threads released together."""
        for case in cases:
            item, action = items[(case.task_id, case.map_index)], self.actions[case.document]
            action.run_id = run_ids.get(case.document)
            if case.kind == "race":
                self.race(case, item, action)
                continue
            if case.answer is not None:
                action.answer_status = self.answer(case, item, action, self.api)
            if case.forced is not None:
                self.force(case, action, self.emulator)

    def answer(self, case: Case, item: dict[str, Any], action: Action, api: AirflowApi) -> int:
        """PATCH the Required Action as the UI does: the chosen option and every parameter's value."""
        assert case.answer is not None
        given = {name: spec.get("value") for name, spec in item["params"].items()}
        if case.kind == "edit":
            action.edits = _edits(given)
            action.extracted = {name: given[name] for name in action.edits}
            given.update(action.edits)
        if case.answer == "reject":
            given["note"] = case.note
        body = {"chosen_options": [case.option(case.answer)], "params_input": given}
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{RUN_ID}/taskInstances/{case.task_id}/{case.map_index}/hitlDetails"
        for _ in range(ANSWER_ATTEMPTS):
            response = api.http.patch(path, json=body)
            if not _lost_sqlite_write(response):
                break
            action.answer_retries += 1
            time.sleep(0.5)
        if response.status_code not in (200, 409):
            raise E2EError(f"answering {case.ref}: HTTP {response.status_code} {response.text[:300]}")
        action.answered_at = time.time()
        return response.status_code

    def force(self, case: Case, action: Action, emulator: httpx.Client) -> None:
        if action.run_id is None:
            raise E2EError(f"{case.ref}: no run on the emulator for {case.document}")
        emulator.post(f"/runs/{action.run_id}/status", json={"status": case.raw_status}).raise_for_status()
        action.forced_at = time.time()

    def race(self, case: Case, item: dict[str, Any], action: Action) -> None:
        """The answer and the vendor's final status at the same instant (or the answer ``race_delay`` later)."""
        gate = threading.Barrier(2)
        errors: list[BaseException] = []
        api = self.client()
        emulator = httpx.Client(base_url=self.emulator.base_url, timeout=30)

        def answering() -> None:
            gate.wait()
            time.sleep(case.race_delay)
            action.answer_status = self.answer(case, item, action, api)

        def forcing() -> None:
            gate.wait()
            self.force(case, action, emulator)

        threads = [threading.Thread(target=_catching(move, errors)) for move in (answering, forcing)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        if errors:
            raise E2EError(f"the race of {case.ref} failed: {errors[0]!r}")

    # --- the UI ----------------------------------------------------------------------------------

    def check_ui(self, items: dict[tuple[str, int], dict[str, Any]], run_ids: dict[str, str]) -> None:
        shutil.rmtree(SCREENSHOTS, ignore_errors=True)
        SCREENSHOTS.mkdir(parents=True)
        shown = next(c for c in self.cases if c.task_id == "confidence" and c.kind == "edit")
        run_url = f"https://dashboard.extend.ai/workflows/runs/{run_ids[shown.document]}"
        item = items[(shown.task_id, shown.map_index)]
        try:
            with browser(self.stack.root / "chromium-profile") as driver:
                self.ui_problems = check_required_actions(driver, self.stack.api_url, shown, item, run_url, SCREENSHOTS)
        except (E2EError, WebDriverException) as exc:
            self.ui_problems = [f"the UI check could not run: {exc}"]
        self.mark("ui checked")
        self.log(f"UI checked ({len(self.ui_problems)} problems); screenshots in {SCREENSHOTS}")

    # --- the checks ------------------------------------------------------------------------------

    def check(
        self,
        records: Records,
        items: dict[tuple[str, int], dict[str, Any]],
        still_open: int,
        runs: list[dict[str, Any]],
    ) -> None:
        out = self.outcome
        out.figure(
            f"cases: {len(self.cases)} ({counts(Counter(c.kind for c in self.cases))}); platforms "
            f"{counts(Counter(c.platform for c in self.cases))}; tasks {counts(Counter(c.task_id for c in self.cases))}"
        )
        check_cases(out, self.cases, self.actions, records, items)
        check_items(out, self.cases, items, still_open)
        check_runs(out, self.cases, runs, records, DAG_ID, RUN_ID)
        for problem in self.ui_problems:
            out.require(False, f"UI: {problem}")
        out.figure(
            "UI: the Required Actions page and one Required Action checked"
            + ("" if self.ui_problems else " (no problems)")
            + f"; screenshots in {SCREENSHOTS}"
        )
        out.figure(
            "timeline: " + ", ".join(f"{name} at {at:.0f} s" for name, at in self.timings.items() if name != "progress")
        )


def _edits(given: dict[str, Any]) -> dict[str, Any]:
    """What a reviewer changes: the total (the field the extraction misread) and the vendor's name."""
    edits: dict[str, Any] = {}
    if isinstance(given.get("total"), int | float):
        edits["total"] = round(float(given["total"]) + 100.25, 2)
    if isinstance(given.get("vendor"), str):
        edits["vendor"] = given["vendor"] + " (reviewed)"
    return edits


def _lost_sqlite_write(response: httpx.Response) -> bool:
    """Two writers of one Required Action at the same instant (the person and the provider closing it): SQLite
    refuses one of the two transactions outright, which the API server answers as a 500 "Database error"."""
    return response.status_code == 500 and "Database error" in response.text


def _catching(move: Callable[[], None], errors: list[BaseException]) -> Callable[[], None]:
    """``move``, keeping what it raises for the main thread to report."""

    def run() -> None:
        try:
            move()
        except BaseException as exc:
            errors.append(exc)

    return run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make e2e-review", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="runs sent to review, one mapped task instance each")
    common_arguments(parser, fault_rate=0.0)
    parser.add_argument(
        "--processing-seconds",
        type=float,
        default=10.0,
        help="how long an Extend run takes to reach review or finish (TableFlow and Noxus runs start in review); "
        "under 10 s its trigger can fire before the scheduler heard of the deferral (apache/airflow#72716)",
    )
    parser.add_argument("--parallelism", type=int, default=8, help="Airflow's [core] parallelism")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds each wait of the run may take")
    args = parser.parse_args(argv)
    if args.runs < MIN_RUNS:
        parser.error(f"--runs must be at least {MIN_RUNS}: one case of each kind")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stack = Stack(Path(tempfile.mkdtemp(prefix="flowruns-e2e-review-")), parallelism=args.parallelism)
    return conduct("e2e-review", ReviewE2E(stack, args), stack, args)


if __name__ == "__main__":
    sys.exit(main())
