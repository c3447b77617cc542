"""The DAGs ``make e2e-watcher`` runs: two watched assets and one consumer that records every event.

The watchers follow every flow of their connection (no ``flow_id``) and announce succeeded and failed
runs. The consumer writes the payloads each DAG run received, duplicates included, to one JSON file per
DAG run under ``FLOWRUNS_WATCHER_OUT``, so the runner counts what reached the consumer.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, AssetWatcher, dag, get_current_context, task

from airflow_flowruns.triggers.watcher import FlowRunEventTrigger

POLL_INTERVAL = 2.0
WATCHED = [
    Asset(
        f"{platform}://e2e-runs",
        watchers=[
            AssetWatcher(
                name=f"{platform}_runs",
                trigger=FlowRunEventTrigger(
                    conn_id=f"{platform}_e2e", states=["succeeded", "failed"], poll_interval=POLL_INTERVAL
                ),
            )
        ],
    )
    for platform in ("tableflow", "extend")
]


@dag(
    dag_id="flowruns_watcher_e2e",
    schedule=WATCHED[0] | WATCHED[1],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=4,
    tags=["flowruns", "e2e"],
)
def flowruns_watcher_e2e() -> None:
    @task
    def record(triggering_asset_events: Any = None) -> int:
        payloads = [
            event.extra["payload"]
            for events in (triggering_asset_events or {}).values()
            for event in events
            if "payload" in event.extra
        ]
        run_id = get_current_context()["dag_run"].run_id
        out = Path(os.environ["FLOWRUNS_WATCHER_OUT"]) / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', run_id)}.json"
        out.write_text(json.dumps({"dag_run": run_id, "payloads": payloads}))
        return len(payloads)

    record()


flowruns_watcher_e2e()
