"""Review in Airflow: extract an invoice with Extend and let a person in Airflow check what the model was unsure of.

``extract`` uploads one invoice, runs an Extend workflow and waits in the triggerer. With ``on_review="airflow"``
a run that stops for review in Extend becomes an Airflow Required Action (Browse → Required Actions), and with
``review_below_confidence=0.9`` so does a run that finished with any field below that confidence. The reviewer
sees the fields and their confidence, may edit them, and accepts (the task succeeds with the fields as edited),
rejects with a note (the task fails and is not retried), or, while the run is in review in Extend, leaves the
decision to Extend's review. The run's outputs land in ``outputs.json`` under ``outputs_to``, reviewed values
in place of the extracted ones.

``book_invoice`` reads the landed fields and XCom ``review`` (None when no review was needed) and says who
decided what. ``report_rejection`` runs when ``extract`` failed, and names the reviewer and the note when the
failure was a rejection.

Airflow Variables: ``flowruns_data_dir`` (folder of ``invoice.pdf``, default ``/data``), ``flowruns_outputs_dir``
(where outputs land, default ``/data/outputs``) and ``flowruns_review_workflow`` (default the emulator's
``workflow_invoice``, whose runs finish with an uncertain ``total``; ``workflow_review`` stops in review).
Connection: ``AIRFLOW_CONN_EXTEND_DEFAULT='{"conn_type": "extend", "password": "<api key>"}'``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from airflow.sdk import ObjectStoragePath, dag, get_current_context, task

from airflow_flowruns.operators.flow_run import FlowRunOperator

DATA = "{{ var.value.get('flowruns_data_dir', '/data') }}"
OUTPUTS = "{{ var.value.get('flowruns_outputs_dir', '/data/outputs') }}"
WORKFLOW = "{{ var.value.get('flowruns_review_workflow', 'workflow_invoice') }}"
# Who may answer the Required Action: Airflow user ids (the simple auth manager's are the user names, and
# `airflow standalone` makes `admin`). Leave it out to let anyone who may edit the DAG's Required Actions answer.
REVIEWERS = ["admin"]
# The emulator's runs take a second. Against Extend poll less often (the default is 30 s).
POLL_SECONDS = 1


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["flowruns", "extend", "example"])
def review_in_airflow() -> None:
    extract = FlowRunOperator(
        task_id="extract",
        flowruns_conn_id="extend_default",
        flow_id=WORKFLOW,
        files={"file": f"{DATA}/invoice.pdf"},
        metadata={"source": "airflow", "dag_run": "{{ run_id }}"},
        on_review="airflow",
        review_below_confidence=0.9,
        review_assignees=REVIEWERS,
        outputs_to=OUTPUTS,
        deferrable=True,
        poll_interval=POLL_SECONDS,
        timeout=3 * 24 * 3600,  # the deadline covers the review too: three days to answer
        retries=1,  # a timeout is retried (the retry asks again about the same run); a rejection never is
    )

    @task
    def book_invoice(result: dict[str, Any]) -> str:
        outputs = json.loads((ObjectStoragePath(result["landing"]["path"]) / "outputs.json").read_text())
        fields = {o["name"]: o["value"] for o in outputs["outputs"] if o["kind"] == "field"}
        review = get_current_context()["ti"].xcom_pull(task_ids="extract", key="review")
        invoice = f"invoice {fields.get('invoice_number')} of {fields.get('vendor')}: {fields.get('total')}"
        if review is None:
            return f"Booked {invoice} (no review needed)."
        if review["where"] != "airflow":  # the review ended in Extend's app first
            return f"Booked {invoice}. {review['note']}"
        edited = ", ".join(f"{name} {c['extracted']} → {c['reviewed']}" for name, c in review["edited"].items())
        return f"Booked {invoice}; accepted by {review['by']}" + (f", who edited {edited}." if edited else ".")

    @task(trigger_rule="one_failed")
    def report_rejection() -> str:
        review = get_current_context()["ti"].xcom_pull(task_ids="extract", key="review")
        if review is None or review["decision"] != "reject":
            return "The extraction failed without a rejection: see the extract task's log."
        return f"{review['by']} rejected the invoice: {review['note'] or 'no reason given'}"

    # Airflow's type hints cannot say that a TaskFlow task takes an XComArg (.output) in place of its value.
    book_invoice(extract.output)  # type: ignore[arg-type]
    extract >> report_rejection()


review_in_airflow()
