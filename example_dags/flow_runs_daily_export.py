"""Export yesterday's TableFlow runs every day, as JSON Lines, one file per day.

``catchup=True`` fills in every missed day; a re-run or a backfill of a day rewrites that day's file
whole, so no row is ever duplicated or lost. Files go to the folder in the Airflow Variable
``flowruns_export_dir`` (default ``/tmp/flowruns-exports``).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

try:
    from airflow.sdk import CronDataIntervalTimetable
except ImportError:  # Airflow 3.1: the timetable is not in the Task SDK yet
    from airflow.timetables.interval import CronDataIntervalTimetable  # type: ignore[assignment]

from airflow_flowruns.operators.export import FlowRunsExportOperator


@dag(
    # A data-interval timetable: each run covers [data_interval_start, data_interval_end), one whole day.
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=datetime(2026, 3, 1),
    catchup=True,
    tags=["flowruns", "export", "example"],
)
def flow_runs_daily_export() -> None:
    FlowRunsExportOperator(
        task_id="export",
        flowruns_conn_id="tableflow_default",
        flow_id="dk4g1tUg1uHLs8YU",
        states=["succeeded", "failed", "needs_review"],
        destination=(
            "file://{{ var.value.get('flowruns_export_dir', '/tmp/flowruns-exports') }}"
            "/tableflow/{{ data_interval_start | ds }}.jsonl"
        ),
    )


flow_runs_daily_export()
