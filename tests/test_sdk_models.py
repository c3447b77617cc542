"""Every Extend and Noxus answer of the emulator, field by field against the official SDK's model of it.

Parsing with the SDK (``test_vendor_sdks.py``) is not enough: its models accept any extra field, so an
emulator sending ``metadata`` in Extend list items would still parse. ``vendor_sdk/check_models.py`` runs
in the SDK virtualenv and reports every field the model lacks and every required field that is missing.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_flowruns.emulator.config import EXTEND_INVOICE_WORKFLOW, NOXUS_DOCUMENT_WORKFLOW
from conftest import API_KEY, Emulator
from test_vendor_sdks import SCRIPTS, SDK_PYTHON

EXTEND_STATUSES = ["PENDING", "PROCESSING", "NEEDS_REVIEW", "PROCESSED", "FAILED", "REJECTED", "CANCELLED"]
NOXUS_STATUSES = ["queued", "running", "awaiting_human_feedback", "completed", "failed", "stopped"]
EXTEND = "extend_ai.types"
NOXUS_RUN = "noxus_sdk.resources.runs:Run"


def problems(answers: list[tuple[str, str, Any]]) -> dict[str, list[str]]:
    """``(label, SDK model, body)`` in, the problems the checker found per label out."""
    assert SDK_PYTHON.exists(), "the SDK virtualenv is missing: run `make test`, which creates .venv-sdk"
    payload = json.dumps([{"label": label, "model": model, "body": body} for label, model, body in answers])
    done = subprocess.run(
        [str(SDK_PYTHON), str(SCRIPTS / "check_models.py")],
        input=payload,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {label: found for label, found in json.loads(done.stdout).items() if found}


def test_the_checker_catches_a_summary_with_metadata_and_a_run_without_step_runs() -> None:
    """The checker itself can fail: a list item with ``metadata`` and a full run missing ``stepRuns``."""
    summary = {
        "object": "workflow_run",
        "id": "workflow_run_1",
        "status": "PROCESSED",
        "workflow": {"object": "workflow", "id": "w", "name": "n", "createdAt": "2026-01-05T09:00:00Z"},
        "workflowVersion": {
            "object": "workflow_version",
            "id": "v",
            "version": "1",
            "createdAt": "2026-01-05T09:00:00Z",
        },
        "dashboardUrl": "https://dashboard.extend.ai/workflows/runs/workflow_run_1",
        "files": [],
        "createdAt": "2026-01-05T09:00:00Z",
        "updatedAt": "2026-01-05T09:00:00Z",
        "metadata": {"airflow_task_key": "af-1"},
    }
    found = problems([("summary", f"{EXTEND}:WorkflowRunSummary", summary)])
    assert found == {
        "summary": [
            "$.metadata: not a field of WorkflowRunSummary",
            "$.workflow.updatedAt: required by WorkflowSummary, missing",
        ]
    }
    full = {k: v for k, v in summary.items() if k not in ("createdAt", "updatedAt")}
    found = problems([("run", f"{EXTEND}:WorkflowRun", {**full, "reviewed": False})])
    assert "$.stepRuns: required by WorkflowRun, missing" in found["run"]


@pytest.mark.slow
def test_every_extend_answer_has_exactly_the_sdk_models_fields(emulator: Emulator, pdf: Path) -> None:
    answers: list[tuple[str, str, Any]] = []
    headers = {"Authorization": f"Bearer {API_KEY}", "x-extend-api-version": "2026-02-09"}
    with httpx.Client(base_url=emulator.url, headers=headers, timeout=10) as http:
        upload = http.post("/files/upload", files={"file": ("doc.pdf", pdf.read_bytes(), "application/pdf")})
        answers.append(("upload", f"{EXTEND}:File", upload.json()))
        file_id = upload.json()["id"]
        body = {"workflow": {"id": EXTEND_INVOICE_WORKFLOW}, "file": {"id": file_id}, "metadata": {"k": "v"}}
        for status in EXTEND_STATUSES:
            run = http.post("/workflow_runs", json=body).json()
            answers.append((f"create ({status})", f"{EXTEND}:WorkflowRun", run))
            emulator.set_status(run["id"], status, error="unreadable" if status == "FAILED" else None)
            answers.append(
                (f"retrieve {status}", f"{EXTEND}:WorkflowRun", http.get(f"/workflow_runs/{run['id']}").json())
            )
        pending = http.post("/workflow_runs", json=body).json()
        cancelled = http.post(f"/workflow_runs/{pending['id']}/cancel")
        answers.append(("cancel", f"{EXTEND}:WorkflowRun", cancelled.json()))
        listing = http.get("/workflow_runs", params={"workflowId": EXTEND_INVOICE_WORKFLOW, "maxPageSize": 3}).json()
        answers.append(("list page", "extend_ai.workflow_runs.types:WorkflowRunsListResponse", listing))
        assert listing["nextPageToken"] and len(listing["data"]) == 3
        everything = http.get("/workflow_runs", params={"maxPageSize": 100}).json()
        answers.append(("list, all statuses", "extend_ai.workflow_runs.types:WorkflowRunsListResponse", everything))
        errors = [
            http.get("/workflow_runs/workflow_run_missing"),
            http.post("/workflow_runs", json={"workflow": {"id": EXTEND_INVOICE_WORKFLOW}}),
            http.get("/workflow_runs", headers={"Authorization": "Bearer wrong"}),
            http.post(f"/workflow_runs/{run['id']}/cancel"),
        ]
        answers += [(f"error {r.status_code} #{i}", f"{EXTEND}:ApiError", r.json()) for i, r in enumerate(errors)]
        assert [r.status_code for r in errors] == [404, 400, 401, 400]
    statuses = {item["status"] for item in everything["data"]}
    assert set(EXTEND_STATUSES) <= statuses | {"CANCELLING"}
    assert problems(answers) == {}


@pytest.mark.slow
def test_every_noxus_answer_has_exactly_the_sdk_models_fields(emulator: Emulator, pdf: Path) -> None:
    answers: list[tuple[str, str, Any]] = []
    with httpx.Client(base_url=emulator.url, headers={"X-API-Key": API_KEY}, timeout=10) as http:
        upload = http.post("/v1/file", files={"file": ("doc.pdf", pdf.read_bytes(), "application/pdf")}).json()
        answers.append(("upload", "noxus_sdk.resources.files:File", upload))
        body = {"input": {"document": {"uri": upload["uri"], "name": "doc.pdf"}, "instructions": "Summarize"}}
        runs = f"/v1/workflows/{NOXUS_DOCUMENT_WORKFLOW}/runs"
        for status in NOXUS_STATUSES:
            run = http.post(runs, json=body).json()
            answers.append((f"start ({status})", NOXUS_RUN, run))
            emulator.set_status(run["id"], status, error="node failed" if status == "failed" else None)
            answers.append((f"get {status}", NOXUS_RUN, http.get(f"{runs}/{run['id']}").json()))
        stopped = http.post(f"/v1/runs/{http.post(runs, json=body).json()['id']}/stop").json()
        answers.append(("stop", NOXUS_RUN, stopped))
        page = http.get(runs, params={"page": 1, "size": 100}).json()
        answers += [(f"workflow listing item {i}", NOXUS_RUN, item) for i, item in enumerate(page["items"])]
    assert {item["status"] for item in page["items"]} == set(NOXUS_STATUSES)
    assert problems(answers) == {}


def test_the_golden_payloads_built_from_the_sdk_models_match_them() -> None:
    golden = Path(__file__).parent / "golden"
    fixtures = {
        "extend_workflow_run_failed.json": f"{EXTEND}:WorkflowRun",
        "extend_runs_page.json": "extend_ai.workflow_runs.types:WorkflowRunsListResponse",
        "noxus_run_failed.json": NOXUS_RUN,
    }
    answers = [(name, model, json.loads((golden / name).read_text())["body"]) for name, model in fixtures.items()]
    assert problems(answers) == {}
