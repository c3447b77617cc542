"""React to every finished flow run, including runs started outside Airflow (the vendor's web app, an e-mail
or SFTP integration, another tool calling the API).

``FlowRunEventTrigger`` watches the connection's runs of one flow from the triggerer. Each run that
succeeds or fails becomes an event of the ``tableflow://invoices`` asset, and the asset schedules
``load_finished_invoices``. Events that arrive while a DAG run is being created coalesce: one DAG run may
carry many, so the task iterates every event in ``triggering_asset_events``.

Delivery is at least once: after a triggerer is killed, its successor may announce a run again, with the
same ``dedup_key``. The task therefore records each key it handles in a table whose primary key is the
``dedup_key`` and skips a key already there (any table with a unique key works: use your warehouse's).
A run started by an Airflow task carries that task's key in ``task_key``; a run started elsewhere has none.

Airflow Variable ``flowruns_events_db``: the SQLite file of handled keys (default in the temp folder).
Connection: ``AIRFLOW_CONN_TABLEFLOW_DEFAULT='{"conn_type": "tableflow", "password": "<api key>"}'``.
"""

from __future__ import annotations

import sqlite3
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, AssetWatcher, dag, task

from airflow_flowruns.triggers.watcher import FlowRunEventTrigger

INVOICES_DONE = Asset(
    "tableflow://invoices",
    watchers=[
        AssetWatcher(
            name="invoice_runs",
            trigger=FlowRunEventTrigger(
                conn_id="tableflow_default", flow_id="dk4g1tUg1uHLs8YU", states=["succeeded", "failed"]
            ),
        )
    ],
)
HANDLED_DB = "{{ var.value.get('flowruns_events_db', '') }}"


def handle_new(db_path: str, payloads: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Handle each announcement once: record its ``dedup_key``, skipping the keys already recorded."""
    path = Path(db_path or Path(tempfile.gettempdir()) / "flowruns_events.sqlite3")
    handled: list[str] = []
    skipped: list[str] = []
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS handled_runs (dedup_key TEXT PRIMARY KEY, run_id TEXT, state TEXT, "
            "started_by_airflow INTEGER, url TEXT)"
        )
        for payload in payloads:
            inserted = db.execute(
                "INSERT OR IGNORE INTO handled_runs VALUES (?, ?, ?, ?, ?)",
                (
                    payload["dedup_key"],
                    payload["run_id"],
                    payload["state"],
                    payload["task_key"] is not None,
                    payload["url"],
                ),
            ).rowcount
            (handled if inserted else skipped).append(payload["dedup_key"])
            # Here a real DAG loads the run's results, alerts on a failure, ... once per dedup_key.
    return {"handled": handled, "skipped": skipped}


@dag(
    schedule=[INVOICES_DONE], start_date=datetime(2026, 1, 1), catchup=False, tags=["flowruns", "tableflow", "example"]
)
def load_finished_invoices() -> None:
    @task
    def load(db_path: str, triggering_asset_events: Any = None) -> dict[str, list[str]]:
        events = (triggering_asset_events or {}).get(INVOICES_DONE, [])
        return handle_new(db_path, [event.extra["payload"] for event in events if "payload" in event.extra])

    load(HANDLED_DB)


load_finished_invoices()
