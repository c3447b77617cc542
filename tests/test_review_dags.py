"""Review in Airflow (``on_review="airflow"``) end to end under ``airflow dags test``, against the emulator.

The test plays the reviewers while the DAG runs: the vendor's app through the emulator's control API, and a
person in Airflow by writing the answer into the task's Required Action (its ``hitl_detail`` row) as Airflow's
REST API does. The DAG file loads ``support/dags_test_hitl.py`` first, so that ``airflow dags test`` serves a
Required Action as a deployment does: its inline trigger reads and answers one as the triggerer does, and a
worker's request that a deployment refuses fails here too.

On Airflow 3.3 the API server resumes a task on an answer, and ``airflow dags test`` has no API server: the
cases where a person answers run below 3.3 only (``make e2e-review`` covers 3.3).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from airflow_flowruns.emulator.documents import invoice_facts, misread
from airflow_flowruns.platforms.extend.emulator import EXTEND_REVIEW_WORKFLOW
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_REVIEW_FLOW, TABLEFLOW_SMALL_FILE_FLOW
from airflow_flowruns.version_compat import AIRFLOW_V_3_3_PLUS
from support.airflow import ROOT, airflow_env, dags_test_command, last_dag_run
from support.emulator import API_KEY, Emulator

pytestmark = pytest.mark.integration

DOCUMENT = "acme-0042.pdf"
REVIEWER = {"id": "rita", "name": "Rita Reviewer"}
DAG_FILE = '''"""One FlowRunOperator task, ``extract``, as the JSON in FLOWRUNS_REVIEW_DAG describes it."""
import json
import os
from datetime import datetime, timedelta

from airflow.sdk import DAG
from support.dags_test_hitl import install

from airflow_flowruns.operators.flow_run import FlowRunOperator

install()
spec = json.loads(os.environ["FLOWRUNS_REVIEW_DAG"])
retries = {"retries": spec["retries"], "retry_delay": timedelta(0)}
with DAG(spec["dag_id"], schedule=None, start_date=datetime(2026, 1, 1), default_args=retries):
    FlowRunOperator(task_id="extract", **spec["task"])
'''
JSON_COLUMNS = ("options", "params", "chosen_options", "params_input", "responded_by")
LABELS = {"tableflow": "TableFlow", "extend": "Extend"}
FILE_FIELDS = {"tableflow": "document", "extend": "file"}
answered_in_airflow = pytest.mark.skipif(
    AIRFLOW_V_3_3_PLUS,
    reason="On Airflow 3.3 the API server resumes the task on an answer, and airflow dags test has no API server; "
    "make e2e-review covers it.",
)


@dataclass
class DagsTest:
    """``airflow dags test`` of one DAG, running in the background; its output goes to ``log``."""

    home: Path
    dag_id: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def required_action(self, timeout: float = 60) -> dict[str, Any]:
        """The task's Required Action, once the task has raised it."""
        deadline = time.monotonic() + timeout
        while (item := required_action(self.home, self.dag_id)) is None:
            assert self.process.poll() is None, "the DAG run ended without a Required Action:\n" + self.output()[-4000:]
            assert time.monotonic() < deadline, "no Required Action in time:\n" + self.output()[-4000:]
            time.sleep(0.2)
        return item

    def finish(self, timeout: float = 120) -> tuple[str, dict[str, str], dict[str, Any]]:
        """The DAG run's state, task states and XComs, once ``airflow dags test`` ended; a second try of the task
        fails the test at once (every case here ends in the first)."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            assert self.tries() <= 1, "the task was retried:\n" + self.output()[-4000:]
            assert time.monotonic() < deadline, "airflow dags test did not end in time:\n" + self.output()[-4000:]
            time.sleep(0.5)
        return last_dag_run(self.home, self.dag_id)

    def tries(self) -> int:
        """The task's tries so far; 0 before its task instance exists."""
        with closing(sqlite3.connect(self.home / "airflow.db", timeout=30)) as db:
            found = db.execute("SELECT try_number FROM task_instance WHERE dag_id = ?", (self.dag_id,)).fetchone()
        return int(found[0]) if found else 0


StartDagsTest = Callable[..., DagsTest]


def required_action(home: Path, dag_id: str) -> dict[str, Any] | None:
    """The Required Action (``hitl_detail`` row) of the DAG's task, its JSON columns decoded."""
    with closing(sqlite3.connect(home / "airflow.db", timeout=30)) as db:
        db.row_factory = sqlite3.Row
        row = db.execute(
            "SELECT h.* FROM hitl_detail h JOIN task_instance t ON t.id = h.ti_id WHERE t.dag_id = ?", (dag_id,)
        ).fetchone()
    if row is None:
        return None
    item = dict(row)
    return {**item, **{name: json.loads(item[name]) if item[name] else None for name in JSON_COLUMNS}}


def answer(home: Path, item: dict[str, Any], option: str, params_input: dict[str, Any]) -> None:
    """Record a person's answer as Airflow's REST API does (``PATCH .../hitlDetails``): the option chosen, the
    parameters as submitted, who and when; refused, like the API's 409, when the item has an answer already."""
    responded_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    with closing(sqlite3.connect(home / "airflow.db", timeout=30)) as db, db:
        changed = db.execute(
            "UPDATE hitl_detail SET chosen_options = ?, params_input = ?, responded_by = ?, responded_at = ? "
            "WHERE ti_id = ? AND responded_at IS NULL",
            (json.dumps([option]), json.dumps(params_input), json.dumps(REVIEWER), responded_at, item["ti_id"]),
        ).rowcount
    assert changed == 1, "the Required Action had an answer already"


def shown(item: dict[str, Any]) -> dict[str, Any]:
    """The Required Action's parameters as its form shows them: the extracted values, and an empty note."""
    return {name: param["value"] for name, param in item["params"].items()}


@pytest.fixture
def home(airflow_home: Path, tmp_path: Path) -> Path:
    """An Airflow home of the test's own: a copy of the migrated database, and a DAG folder with DAG_FILE."""
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    shutil.copy(airflow_home / "airflow.db", home / "airflow.db")
    (home / "dags" / "review.py").write_text(DAG_FILE)
    return home


@pytest.fixture
def document(tmp_path: Path) -> Path:
    path = tmp_path / DOCUMENT
    path.write_bytes(b"%PDF-1.4\n% an invoice\n%%EOF\n")
    return path


@pytest.fixture
def dags_test(home: Path, emulator: Emulator, document: Path) -> Iterator[StartDagsTest]:
    """Starts ``airflow dags test`` of a DAG whose FlowRunOperator sends ``document`` to ``flow_id`` with
    ``on_review="airflow"`` (``task``: more of its arguments); stops whatever the test left running."""
    started: list[DagsTest] = []

    def start(dag_id: str, platform: str, flow_id: str, retries: int = 0, **task: Any) -> DagsTest:
        arguments = {
            "flowruns_conn_id": f"review_{platform}",
            "flow_id": flow_id,
            "files": {FILE_FIELDS[platform]: str(document)},
            "on_review": "airflow",
            "poll_interval": 0.2,
            "timeout": 120,
            **task,
        }
        connection = {"conn_type": platform, "password": API_KEY, "host": emulator.url}
        env = airflow_env(
            home,
            AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
            FLOWRUNS_REVIEW_DAG=json.dumps({"dag_id": dag_id, "retries": retries, "task": arguments}),
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")])),
            **{f"AIRFLOW_CONN_REVIEW_{platform.upper()}": json.dumps(connection)},
        )
        log = home / f"{dag_id}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(dags_test_command(dag_id), env=env, stdout=out, stderr=subprocess.STDOUT)
        started.append(DagsTest(home, dag_id, process, log))
        return started[-1]

    yield start
    for left in started:
        if left.process.poll() is None:
            left.process.kill()
            left.process.wait()


@pytest.mark.parametrize(
    ("platform", "flow_id", "deferrable", "status", "task_state", "run_state"),
    [
        ("tableflow", TABLEFLOW_REVIEW_FLOW, True, "completed", "success", "succeeded"),
        ("extend", EXTEND_REVIEW_WORKFLOW, False, "REJECTED", "failed", "failed"),
    ],
    ids=["tableflow-deferrable-approved", "extend-not-deferrable-rejected"],
)
def test_a_review_ended_in_the_vendors_app_decides_and_closes_the_required_action(
    dags_test: StartDagsTest,
    emulator: Emulator,
    platform: str,
    flow_id: str,
    deferrable: bool,
    status: str,
    task_state: str,
    run_state: str,
) -> None:
    emulator.scenario(flow_id, platform=platform, processing_seconds=0.2, review=True, review_seconds=None)
    label = LABELS[platform]
    dag = dags_test(f"review_vendor_{platform}", platform, flow_id, deferrable=deferrable)
    item = dag.required_action()
    assert item["responded_at"] is None and item["subject"] == f"Review {DOCUMENT}: {label} flow {flow_id}"
    (run,) = emulator.runs()
    emulator.set_status(run["id"], status, "Not our supplier" if status == "REJECTED" else None)

    _, tasks, xcom = dag.finish()
    assert tasks == {"extract": task_state}, dag.output()[-4000:]
    review = xcom["extract.review"]
    assert (review["where"], review["decision"], review["by"]) == (platform, run_state, None)
    closed = required_action(dag.home, dag.dag_id)
    assert closed is not None and closed["responded_at"] is not None and closed["responded_by"] is None
    assert closed["chosen_options"] == [f"Wait for the review in {label}"]
    assert closed["params_input"]["note"] == f"Decided in {label}: the run ended {run_state} ({status})."
    assert review["note"] == closed["params_input"]["note"]


@answered_in_airflow
@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "not-deferrable"])
def test_a_person_accepts_with_an_edited_field_and_the_task_succeeds(
    dags_test: StartDagsTest, emulator: Emulator, deferrable: bool
) -> None:
    emulator.scenario(EXTEND_REVIEW_WORKFLOW, platform="extend", processing_seconds=0.2, review=True)
    dag = dags_test("review_accept", "extend", EXTEND_REVIEW_WORKFLOW, deferrable=deferrable)
    item = dag.required_action()
    extracted, printed = misread(invoice_facts(DOCUMENT))["total"], invoice_facts(DOCUMENT)["total"]
    assert shown(item)["total"] == extracted != printed
    answer(dag.home, item, "Accept the extraction", {**shown(item), "total": printed, "note": "Total as printed"})

    state, tasks, xcom = dag.finish()
    assert (state, tasks) == ("success", {"extract": "success"}), dag.output()[-4000:]
    review = xcom["extract.review"]
    assert review["edited"] == {"total": {"extracted": extracted, "reviewed": printed}}
    decided = (review["where"], review["decision"], review["by"], review["note"])
    assert decided == ("airflow", "accept", REVIEWER["name"], "Total as printed")
    assert xcom["extract.return_value"]["review"] == review
    row = required_action(dag.home, dag.dag_id)  # the person's answer stands
    assert row is not None and (row["responded_by"], row["chosen_options"]) == (REVIEWER, ["Accept the extraction"])


@answered_in_airflow
@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "not-deferrable"])
def test_a_person_rejects_with_a_note_and_the_task_fails_without_a_retry(
    dags_test: StartDagsTest, emulator: Emulator, deferrable: bool
) -> None:
    emulator.scenario(EXTEND_REVIEW_WORKFLOW, platform="extend", processing_seconds=0.2, review=True)
    dag = dags_test("review_reject", "extend", EXTEND_REVIEW_WORKFLOW, retries=1, deferrable=deferrable)
    item = dag.required_action()
    answer(dag.home, item, "Reject the document", {**shown(item), "note": "Duplicate of INV-00042"})

    state, tasks, xcom = dag.finish()
    assert (state, tasks) == ("failed", {"extract": "failed"}), dag.output()[-4000:]
    assert dag.tries() == 1 and len(emulator.runs()) == 1
    rejected = rf"FlowRunRejectedError: {REVIEWER['name']} rejected .+ in Airflow: Duplicate of INV-00042\."
    assert re.search(rejected, dag.output()), dag.output()[-4000:]
    assert (xcom["extract.review"]["decision"], xcom["extract.review"]["edited"]) == ("reject", {})


def test_a_confidence_gate_on_a_platform_without_confidences_fails_before_any_run(
    dags_test: StartDagsTest, emulator: Emulator
) -> None:
    dag = dags_test("review_gate", "tableflow", TABLEFLOW_SMALL_FILE_FLOW, review_below_confidence=0.9)
    state, tasks, _ = dag.finish()
    assert (state, tasks) == ("failed", {"extract": "failed"}), dag.output()[-4000:]
    refused = "FlowRunsConfigError: review_below_confidence needs outputs with a confidence, and TableFlow gives none"
    assert refused in dag.output() and "(platforms that do: Extend)" in dag.output()
    assert emulator.runs() == []
