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

from airflow_flowruns.platforms.extend.emulator import EXTEND_INVOICE_WORKFLOW, EXTEND_SPLIT_WORKFLOW
from airflow_flowruns.platforms.noxus.emulator import NOXUS_DOCUMENT_WORKFLOW
from support.emulator import API_KEY, Emulator
from support.golden import golden
from test_vendor_sdks import SCRIPTS, SDK_PYTHON

EXTEND_STATUSES = ["PENDING", "PROCESSING", "NEEDS_REVIEW", "PROCESSED", "FAILED", "REJECTED", "CANCELLED"]
NOXUS_STATUSES = ["queued", "running", "awaiting_human_feedback", "completed", "failed", "stopped"]
EXTEND = "extend_ai.types"
NOXUS_RUN = "noxus_sdk.resources.runs:Run"
NOXUS_REFERENCE = "reference_models"
"""``vendor_sdk/reference_models.py``: the Noxus answers the SDK leaves unmodelled, each from its source."""
INJECTED = ["429", "500", "503"]
"""Faults the emulator answers itself, in the platform's own error body, before the route runs."""


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


@pytest.mark.integration
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


@pytest.mark.integration
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
        answers += extend_package_and_file_answers(emulator, http, pdf)
        errors = [
            http.get("/workflow_runs/workflow_run_missing"),
            http.post("/workflow_runs", json={"workflow": {"id": EXTEND_INVOICE_WORKFLOW}}),
            http.get("/workflow_runs", headers={"Authorization": "Bearer wrong"}),
            http.post(f"/workflow_runs/{run['id']}/cancel"),
            http.get("/files/file_missing"),
            http.post("/workflow_runs", json={**body, "file": None, "package": {"files": [{"id": file_id}]}}),
            *injected(emulator, http, "/workflow_runs"),
        ]
        answers += [(f"error {r.status_code} #{i}", f"{EXTEND}:ApiError", r.json()) for i, r in enumerate(errors)]
        assert [r.status_code for r in errors] == [404, 400, 401, 400, 404, 400, 429, 500, 503]
    statuses = {item["status"] for item in everything["data"]}
    assert set(EXTEND_STATUSES) <= statuses | {"CANCELLING"}
    assert problems(answers) == {}


def extend_package_and_file_answers(emulator: Emulator, http: httpx.Client, pdf: Path) -> list[tuple[str, str, Any]]:
    """A run started with ``package`` (created, read, listed) and ``GET /files/{id}`` of a file a split made."""
    answers: list[tuple[str, str, Any]] = []
    ids = [
        http.post("/files/upload", files={"file": (f"part-{i}.pdf", pdf.read_bytes(), "application/pdf")}).json()["id"]
        for i in range(2)
    ]
    body = {"workflow": {"id": EXTEND_INVOICE_WORKFLOW}, "package": {"files": [{"id": i} for i in ids]}}
    package = http.post("/workflow_runs", json=body)
    assert package.status_code == 200, package.text
    answers.append(("package create", f"{EXTEND}:WorkflowRun", package.json()))
    assert [f["id"] for f in package.json()["files"]] == ids
    emulator.set_status(package.json()["id"], "PROCESSED")
    answers.append(
        ("package retrieve", f"{EXTEND}:WorkflowRun", http.get(f"/workflow_runs/{package.json()['id']}").json())
    )
    split = http.post("/workflow_runs", json={"workflow": {"id": EXTEND_SPLIT_WORKFLOW}, "file": {"id": ids[0]}})
    emulator.set_status(split.json()["id"], "PROCESSED")
    step_runs = http.get(f"/workflow_runs/{split.json()['id']}").json()["stepRuns"]
    made = {f["id"]: f for step in step_runs for f in step["files"] if f.get("parentFileId")}
    assert made, "a split step lists the files it made"
    for i, (file_id, summary) in enumerate(made.items()):
        file = http.get(f"/files/{file_id}").json()
        answers.append((f"file {i}", f"{EXTEND}:File", file))
        assert {**summary, "presignedUrl": file["presignedUrl"]} == file, "the file the run lists, plus its URL"
    return answers


def injected(emulator: Emulator, http: httpx.Client, path: str) -> list[httpx.Response]:
    """The error answers the emulator makes up itself (rate limit, server errors), one per kind, to a GET of
    ``path`` on the server (whatever base path ``http`` has)."""
    answers = []
    for kind in INJECTED:
        emulator.fault(path, int(kind), method="GET", kind=kind)
        answers.append(http.get(f"{emulator.url}{path}"))
    return answers


@pytest.mark.integration
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
        for item in page["items"]:
            by_id = http.get(f"/v1/runs/{item['id']}").json()
            answers.append((f"get /v1/runs/{{id}} {item['status']}", f"{NOXUS_REFERENCE}:RunWithWorkflow", by_id))
        invalid = [
            http.post(runs, json={}),
            http.post(runs, json={"input": {"nope": 1}}),
            http.post("/v1/file", files={"other": ("x.txt", b"x", "text/plain")}),
            http.get(runs, params={"size": 0}),
        ]
        answers += [(f"422 #{i}", f"{NOXUS_REFERENCE}:ValidationErrorBody", r.json()) for i, r in enumerate(invalid)]
        errors = [
            http.get(f"{runs}/missing"),
            http.get("/v1/runs/missing"),
            http.get(runs, headers={"X-API-Key": "wrong"}),
            *injected(emulator, http, runs),
        ]
        answers += [
            (f"error {r.status_code} #{i}", f"{NOXUS_REFERENCE}:ErrorBody", r.json()) for i, r in enumerate(errors)
        ]
    assert [r.status_code for r in invalid] == [422] * 4
    assert [r.status_code for r in errors] == [404, 404, 401, 429, 500, 503]
    assert {item["status"] for item in page["items"]} == set(NOXUS_STATUSES)
    assert problems(answers) == {}


@pytest.mark.integration
def test_the_golden_payloads_built_from_the_sdk_models_match_them() -> None:
    fixtures = {
        ("extend", "workflow_run_failed.json"): f"{EXTEND}:WorkflowRun",
        ("extend", "workflow_run_usage.json"): f"{EXTEND}:WorkflowRun",
        ("extend", "runs_page.json"): "extend_ai.workflow_runs.types:WorkflowRunsListResponse",
        ("noxus", "run_failed.json"): NOXUS_RUN,
        ("noxus", "run_queued.json"): NOXUS_RUN,
        ("extend", "file_uploaded.json"): f"{EXTEND}:File",
        ("noxus", "file_uploaded.json"): "noxus_sdk.resources.files:File",
    }
    answers = [(f"{platform}/{name}", model, golden(platform, name)) for (platform, name), model in fixtures.items()]
    assert problems(answers) == {}
