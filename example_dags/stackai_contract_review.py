"""Review a contract with a StackAI flow: the file goes to the flow's document node, the question to its input node.

StackAI runs a flow synchronously: its run call answers once the flow has run, so the task waits for that answer
in the worker, for at most the connection's ``run_timeout`` (default 600 s), and ``deferrable`` changes nothing.
The flow's outputs, keyed by output node, are in the task's XCom under ``outputs``.

Files are read from the folder in the Airflow Variable ``flowruns_data_dir`` (default ``/data``).
Connection: ``AIRFLOW_CONN_STACKAI_DEFAULT='{"conn_type": "stackai", "password": "<api key>",
"extra": {"org_id": "<organization id>"}}'``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import dag, task

from airflow_flowruns.operators.flow_run import FlowRunOperator


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["flowruns", "stackai", "example"])
def stackai_contract_review() -> None:
    review = FlowRunOperator(
        task_id="review",
        flowruns_conn_id="stackai_default",
        flow_id="flow_contract_review",
        files={"doc-0": "{{ var.value.get('flowruns_data_dir', '/data') }}/doc.pdf"},
        inputs={"in-0": "List the renewal and termination clauses of this contract."},
    )

    @task
    def report(run: dict[str, Any]) -> str:
        answer = str(run["outputs"]["out-0"])
        return f"StackAI run {run['id']} ended {run['state']}: {answer[:200]}"

    # Airflow's type hints cannot say that a TaskFlow task takes an XComArg (.output) in place of its value.
    report(review.output)  # type: ignore[arg-type]


stackai_contract_review()
