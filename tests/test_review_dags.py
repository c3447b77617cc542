"""Review in Airflow (``on_review="airflow"``) end to end under ``airflow dags test``, against the emulator.

The test plays the reviewers while the DAG runs: the vendor's app through the emulator's control API, and a
person in Airflow by writing the answer into the task's Required Action (its ``hitl_detail`` row) as Airflow's
REST API does. The DAG file loads ``support/dags_test_hitl.py`` first, so that ``airflow dags test`` serves a
Required Action as a deployment does: its inline trigger reads and answers one as the triggerer does, and a
worker's request that a deployment refuses fails here too.

On Airflow 3.3 the API server resumes a task on an answer, and ``airflow dags test`` has no API server: there
the support module plays that part too (``make e2e-review`` answers through a real API server).
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from airflow_flowruns.emulator.documents import invoice_facts, misread
from airflow_flowruns.platforms.extend.emulator import EXTEND_REVIEW_WORKFLOW
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_REVIEW_FLOW, TABLEFLOW_SMALL_FILE_FLOW
from airflow_flowruns.review.register import register_key
from support.airflow import ROOT, airflow_env
from support.emulator import API_KEY, Emulator
from support.review_answers import REVIEWER, DagsTest, StartDagsTest, answer, required_action, shown

pytestmark = pytest.mark.integration

DOCUMENT = "acme-0042.pdf"
DAG_FILE = '''"""One FlowRunOperator task, ``extract``, as the JSON in FLOWRUNS_REVIEW_DAG describes it."""
import configparser
import json
import os
from datetime import datetime, timedelta

from airflow.sdk import DAG
from airflow.timetables.interval import CronDataIntervalTimetable
from support.dags_test_hitl import install

from airflow_flowruns.operators.export import FlowRunsExportOperator
from airflow_flowruns.operators.flow_run import FlowRunOperator

install()
spec = json.loads(os.environ["FLOWRUNS_REVIEW_DAG"])
retries = {"retries": spec["retries"], "retry_delay": timedelta(0)}
yearly = CronDataIntervalTimetable("0 0 1 1 *", timezone="UTC")
with DAG(spec["dag_id"], schedule=yearly, start_date=datetime(2026, 1, 1), default_args=retries):
    extract = FlowRunOperator(task_id="extract", **spec["task"])
    if spec.get("export_to"):  # the runs of the DAG run's interval, as the export operator writes them
        conn_id = spec["task"]["flowruns_conn_id"]
        extract >> FlowRunsExportOperator(task_id="export", flowruns_conn_id=conn_id, destination=spec["export_to"])
'''
LABELS = {"tableflow": "TableFlow", "extend": "Extend"}
FILE_FIELDS = {"tableflow": "document", "extend": "file"}


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

    def start(
        dag_id: str, platform: str, flow_id: str, retries: int = 0, export_to: Path | None = None, **task: Any
    ) -> DagsTest:
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
            FLOWRUNS_REVIEW_DAG=json.dumps(
                {"dag_id": dag_id, "retries": retries, "task": arguments, "export_to": export_to and str(export_to)}
            ),
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")])),
            **{f"AIRFLOW_CONN_REVIEW_{platform.upper()}": json.dumps(connection)},
        )
        # Next new year's day: a manual run then exports the year before it, this year, which holds the run the
        # test starts now (a test started in the last seconds of a year is the one case this misses).
        next_year = datetime.now(UTC).year + 1
        logical_date = datetime(next_year, 1, 1, 1, tzinfo=UTC).isoformat() if export_to else None
        started.append(DagsTest.start(home, dag_id, env, logical_date))
        return started[-1]

    yield start
    for left in started:
        left.stop()


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


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "not-deferrable"])
def test_a_person_accepts_with_an_edited_field_and_the_task_succeeds(
    dags_test: StartDagsTest, emulator: Emulator, deferrable: bool, tmp_path: Path
) -> None:
    emulator.scenario(EXTEND_REVIEW_WORKFLOW, platform="extend", processing_seconds=0.2, review=True)
    exported = tmp_path / "export.jsonl"
    dag = dags_test("review_accept", "extend", EXTEND_REVIEW_WORKFLOW, deferrable=deferrable, export_to=exported)
    item = dag.required_action()
    extracted, printed = misread(invoice_facts(DOCUMENT))["total"], invoice_facts(DOCUMENT)["total"]
    assert shown(item)["total"] == extracted != printed
    answer(dag.home, item, "Accept the extraction", {**shown(item), "total": printed, "note": "Total as printed"})

    state, tasks, xcom = dag.finish()
    assert (state, tasks) == ("success", {"extract": "success", "export": "success"}), dag.output()[-4000:]
    review = xcom["extract.review"]
    assert review["edited"] == {"total": {"extracted": extracted, "reviewed": printed}}
    decided = (review["where"], review["decision"], review["by"], review["note"])
    assert decided == ("airflow", "accept", REVIEWER["name"], "Total as printed")
    assert xcom["extract.return_value"]["review"] == review
    row = required_action(dag.home, dag.dag_id)  # the person's answer stands
    assert row is not None and (row["responded_by"], row["chosen_options"]) == (REVIEWER, ["Accept the extraction"])
    (line,) = [json.loads(text) for text in exported.read_text().splitlines()]  # the export says who reviewed
    assert line["id"] == xcom["extract.return_value"]["id"]
    assert line["review"] == registered(dag.home, "extend", line["id"])
    assert (line["review"]["by"], line["review"]["decision"], line["review"]["at"]) == (
        REVIEWER["name"],
        "accept",
        review["at"],
    )
    with sqlite3.connect(dag.home / "airflow.db") as db:
        (dag_run_id,) = db.execute("SELECT run_id FROM dag_run WHERE dag_id = 'review_accept'").fetchone()
    where = {"dag_id": "review_accept", "task_id": "extract", "run_id": dag_run_id, "map_index": -1}
    assert line["review"]["task"] == where, "the row names the task instance whose XCom holds the whole decision"


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
    (run,) = emulator.runs()
    kept = registered(dag.home, "extend", run["id"])
    assert kept is not None and (kept["where"], kept["decision"], kept["by"]) == ("airflow", "reject", REVIEWER["name"])
    assert "note" not in kept and "edited" not in kept, "the register keeps who and what, not the reviewer's words"


def registered(home: Path, platform: str, run_id: str) -> dict[str, Any] | None:
    """The decision the reviewing task kept for the export in Airflow's Variables, as stored in the database."""
    with sqlite3.connect(home / "airflow.db") as db:
        query = "SELECT val, is_encrypted FROM variable WHERE key = ?"
        found = db.execute(query, (register_key(platform, run_id),)).fetchone()
    if found is None:
        return None
    value, encrypted = found
    if encrypted:  # with the Fernet key Airflow wrote into the home's airflow.cfg
        config = configparser.ConfigParser(interpolation=None)
        config.read(home / "airflow.cfg")
        value = Fernet(config["core"]["fernet_key"].encode()).decrypt(value.encode()).decode()
    return json.loads(value)


def test_a_confidence_gate_on_a_platform_without_confidences_fails_before_any_run(
    dags_test: StartDagsTest, emulator: Emulator
) -> None:
    dag = dags_test("review_gate", "tableflow", TABLEFLOW_SMALL_FILE_FLOW, review_below_confidence=0.9)
    state, tasks, _ = dag.finish()
    assert (state, tasks) == ("failed", {"extract": "failed"}), dag.output()[-4000:]
    refused = "FlowRunsConfigError: review_below_confidence needs outputs with a confidence, and TableFlow gives none"
    assert refused in dag.output() and "(platforms that do: Extend)" in dag.output()
    assert emulator.runs() == []
