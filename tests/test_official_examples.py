"""The mapping, asset and start-then-sense examples end to end with `airflow dags test`, plus their extra links."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from support.airflow import AIRFLOW, airflow_env, dags_test, xcom_value
from support.emulator import API_KEY, Emulator

pytestmark = pytest.mark.integration

LINK = "_link_FlowRunLink"


def tableflow_default(emulator: Emulator) -> str:
    return json.dumps({"conn_type": "tableflow", "password": API_KEY, "host": emulator.url})


def mapped(home: Path, dag_id: str, task_id: str) -> dict[int, dict[str, Any]]:
    """Per map index of the latest run: the task state and every XCom it pushed."""
    with sqlite3.connect(home / "airflow.db") as db:
        (run_id,) = db.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
        ).fetchone()
        found: dict[int, dict[str, Any]] = {
            index: {"state": state}
            for index, state in db.execute(
                "SELECT map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
                (dag_id, run_id, task_id),
            )
        }
        for index, key, value in db.execute(
            "SELECT map_index, key, value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ?",
            (dag_id, run_id, task_id),
        ):
            found[index][key] = xcom_value(value)
    return found


def test_backfill_folder_maps_one_run_per_document(airflow_home: Path, emulator: Emulator, tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    for name in ("c.pdf", "a.pdf", "b.pdf"):
        (folder / name).write_bytes(b"%PDF-1.4 " + name.encode())
    (folder / "notes.txt").write_text("not a document")

    state, tasks, xcom = dags_test(
        airflow_home,
        "backfill_folder",
        AIRFLOW_CONN_TABLEFLOW_DEFAULT=tableflow_default(emulator),
        AIRFLOW_VAR_FLOWRUNS_BACKFILL_DIR=folder.as_uri(),
    )

    assert state == "success"
    runs = {run["id"]: run for run in emulator.runs()}
    extract = mapped(airflow_home, "backfill_folder", "extract")
    assert sorted(extract) == [0, 1, 2]
    for index, name in enumerate(("a.pdf", "b.pdf", "c.pdf")):
        ti = extract[index]
        run = runs[ti["return_value"]["id"]]
        assert ti["state"] == "success"
        assert [f["filename"] for f in run["files"]] == [name]
        assert ti["return_value"]["state"] == "needs_review"
        assert ti["flow_run_id"] == run["id"]
        assert ti[LINK] == ti["flow_run_url"] == ti["return_value"]["url"]
    assert len(runs) == 3
    assert (tasks["route"], tasks["send_to_review_queue"], tasks["post_to_erp"]) == ("success", "success", "skipped")
    assert sorted(xcom["send_to_review_queue.return_value"]) == sorted(ti["flow_run_url"] for ti in extract.values())


def test_a_completed_run_updates_the_asset_that_schedules_the_consumer(
    airflow_home: Path, emulator: Emulator, pdf: Path
) -> None:
    (pdf.parent / "inv.pdf").write_bytes(pdf.read_bytes())
    env = airflow_env(airflow_home)
    for command in (["dags", "reserialize"], ["dags", "unpause", "flow_run_assets_consumer"]):
        subprocess.run([AIRFLOW, *command], env=env, check=True, capture_output=True, timeout=300)

    state, tasks, xcom = dags_test(
        airflow_home,
        "flow_run_assets_producer",
        AIRFLOW_CONN_TABLEFLOW_DEFAULT=tableflow_default(emulator),
        AIRFLOW_VAR_FLOWRUNS_DATA_DIR=str(pdf.parent),
    )

    assert (state, tasks) == ("success", {"extract_invoices": "success"})
    assert xcom["extract_invoices.return_value"]["state"] == "succeeded"
    with sqlite3.connect(airflow_home / "airflow.db") as db:
        (run_id,) = db.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = 'flow_run_assets_producer' ORDER BY id DESC LIMIT 1"
        ).fetchone()
        events = db.execute(
            "SELECT asset.name, asset_event.source_task_id FROM asset_event"
            " JOIN asset ON asset.id = asset_event.asset_id"
            " WHERE asset_event.source_dag_id = 'flow_run_assets_producer' AND asset_event.source_run_id = ?",
            (run_id,),
        ).fetchall()
        queued = db.execute(
            "SELECT asset_dag_run_queue.target_dag_id FROM asset_dag_run_queue"
            " JOIN asset ON asset.id = asset_dag_run_queue.asset_id WHERE asset.name = 'tableflow_invoice_extractions'"
        ).fetchall()
    assert events == [("tableflow_invoice_extractions", "extract_invoices")]
    assert queued == [("flow_run_assets_consumer",)]


def test_operator_and_sensor_both_link_to_the_run(airflow_home: Path, emulator: Emulator, pdf: Path) -> None:
    (pdf.parent / "inv.pdf").write_bytes(pdf.read_bytes())
    state, tasks, xcom = dags_test(
        airflow_home,
        "tableflow_start_then_sense",
        AIRFLOW_CONN_TABLEFLOW_DEFAULT=tableflow_default(emulator),
        AIRFLOW_VAR_FLOWRUNS_DATA_DIR=str(pdf.parent),
    )

    assert (state, tasks) == ("success", {"start": "success", "wait": "success"})
    (run,) = emulator.runs()
    url = xcom["start.flow_run_url"]
    assert run["id"] in url
    assert xcom[f"start.{LINK}"] == xcom[f"wait.{LINK}"] == xcom["wait.flow_run_url"] == url
    assert xcom["wait.flow_run_id"] == xcom["start.flow_run_id"] == run["id"]
    assert (xcom["start.return_value"]["state"], xcom["wait.return_value"]["state"]) == ("running", "succeeded")
