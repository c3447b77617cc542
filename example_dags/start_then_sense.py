"""Start a run without waiting, then follow it with a sensor: the pattern for runs that take hours.

``start`` uploads and starts the run and returns at once (``wait_for_completion=False``), pushing the
run's id and URL to XCom; ``wait`` follows that run id in ``reschedule`` mode, so no worker slot is held
between checks. Both tasks show an "Open flow run" button that opens the run on the platform.

Files come from the folder in the Airflow Variable ``flowruns_data_dir`` (default ``/data``).
Connection: ``AIRFLOW_CONN_TABLEFLOW_DEFAULT='{"conn_type": "tableflow", "password": "<api key>"}'``.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from airflow_flowruns.operators.flow_run import FlowRunOperator
from airflow_flowruns.sensors.flow_run import FlowRunSensor

DATA = "{{ var.value.get('flowruns_data_dir', '/data') }}"


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["flowruns", "tableflow", "example"])
def tableflow_start_then_sense() -> None:
    start = FlowRunOperator(
        task_id="start",
        flowruns_conn_id="tableflow_default",
        flow_id="sm4llFileFlow000",
        files={"document": f"{DATA}/inv.pdf"},
        wait_for_completion=False,
    )
    wait = FlowRunSensor(
        task_id="wait",
        flowruns_conn_id="tableflow_default",
        run_id="{{ ti.xcom_pull(task_ids='start', key='flow_run_id') }}",
        mode="reschedule",
        poke_interval=1,
        timeout=600,
    )
    start >> wait


tableflow_start_then_sense()
