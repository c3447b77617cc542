"""What an Extend workflow run produced: its ``stepRuns[]``, shaped as extend-ai 1.20.0's models have them.

Each configured step gives one step run once the run reached review or its outcome: ``CLASSIFY`` a
``classifyRun``, ``EXTRACT`` an ``extractRun`` of the invoice's facts (JSON Schema output: ``value`` and
per-field ``metadata`` with confidences and citations), ``SPLIT`` a ``splitRun`` whose splits are files
served by ``GET /files/{id}`` through a presigned URL. A run that went through review and was approved
is ``reviewed``: its extraction carries ``initialOutput`` (the misread total), ``reviewedOutput`` and
``edits``, and ``output`` is the reviewed one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import Request

from airflow_flowruns.emulator.documents import REVIEWED_FIELD, GeneratedFile, invoice_facts, misread
from airflow_flowruns.emulator.errors import ApiError
from airflow_flowruns.emulator.presigned import store
from airflow_flowruns.emulator.state import EmulatedRun

if TYPE_CHECKING:
    from airflow_flowruns.platforms.extend.emulator import ExtendWorkflow

WITH_OUTPUTS = {"NEEDS_REVIEW", "PROCESSED", "REJECTED"}
SCHEMA = {
    "type": "object",
    "properties": {
        "vendor": {"type": "string"},
        "invoice_number": {"type": "string"},
        "invoice_date": {"type": "string"},
        "total": {"type": "number"},
        "currency": {"type": "string"},
    },
}
CLASSES = [
    {"id": "invoice", "type": "invoice", "description": "A supplier invoice"},
    {"id": "receipt", "type": "receipt", "description": "A payment receipt"},
]
SPLIT_PARTS = 2
RUN_PREFIX = "workflow_run_"
PART_MARK = "S"


def was_reviewed(run: EmulatedRun) -> bool:
    """A run that waited for review and was then approved or rejected."""
    statuses = [entry.status for entry in run.history()]
    return "NEEDS_REVIEW" in statuses and statuses[-1] in ("PROCESSED", "REJECTED")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _document(run: EmulatedRun) -> dict[str, Any]:
    files = run.record.get("files") or [{"id": None, "name": "document"}]
    return files[0]


def _file_summary(file_id: str, name: str, at: str, parent: str | None = None) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "object": "file",
        "id": file_id,
        "name": name,
        "type": "PDF",
        "metadata": {"pageCount": 2},
        "createdAt": at,
        "updatedAt": at,
    }
    if parent:
        summary["parentFileId"] = parent
    return summary


def step_runs(run: EmulatedRun, workflow: ExtendWorkflow) -> list[dict[str, Any]]:
    """The run's step runs as ``GET /workflow_runs/{id}`` returns them; none before the run has results."""
    history = run.history()
    if history[-1].status not in WITH_OUTPUTS:
        return []
    reviewed = was_reviewed(run)
    document = _document(run)
    at = _results_at(run)
    source = _file_summary(_source_id(run), document["name"], _iso(run.created))
    made: list[dict[str, Any]] = []
    for index, step_type in enumerate(workflow.steps, start=1):
        step_run_id = f"workflow_step_run_{run.id[-12:]}_{index}"
        step = {"object": "workflow_step", "id": f"step_{index}", "name": STEP_NAMES[step_type], "type": step_type}
        base = {
            "object": "workflow_step_run",
            "id": step_run_id,
            "workflowRunId": run.id,
            "status": "PROCESSED",
            "stepType": step_type,
            "step": step,
        }
        processor = {
            "id": _processor_id(run, step_type),
            "status": "PROCESSED",
            "reviewed": reviewed,
            "edited": False,
            "dashboardUrl": f"https://dashboard.extend.ai/runs/{step_run_id}",
            "file": source,
            "createdAt": _iso(run.created),
            "updatedAt": _iso(history[-1].time) if reviewed else at,
        }
        if step_type == "EXTRACT":
            result = {"extractRun": _extract_run(processor, document["name"], reviewed)}
            files = [source]
        elif step_type == "CLASSIFY":
            result = {"classifyRun": _classify_run(processor)}
            files = [source]
        else:
            split_run, files = _split_run(processor, run, workflow, source, at)
            result = {"splitRun": split_run}
        made.append({**base, "files": files, "result": result})
    return made


def _processor_id(run: EmulatedRun, step_type: str) -> str:
    """The id of the processor run behind one step of the run (an ``extract_run``, ``classify_run``, ...)."""
    return f"{step_type.lower()}_run_{run.id[-12:]}"


def usage(run: EmulatedRun, workflow: ExtendWorkflow, status: str, *, summary: bool) -> dict[str, Any]:
    """The run's ``usage``: a credit per page of its files (one without a ``pageCount`` counts as one page) for
    each step, charged once the run has results.

    A full run's is the SDK's ``RunUsage``, its ``breakdown`` one entry per step's processor run; a list item's
    is ``RunUsageSummary``, without ``breakdown``. A workflow run's ``totalCredits`` equals its ``credits``.
    """
    pages = sum(int(file.get("metadata", {}).get("pageCount") or 1) for file in run.record.get("files") or ())
    per_step = pages if status in WITH_OUTPUTS else 0
    credits = per_step * len(workflow.steps)
    charged: dict[str, Any] = {"credits": credits, "totalCredits": credits}
    if summary:
        return charged
    steps = workflow.steps if per_step else []
    breakdown = [
        {"object": f"{step_type.lower()}_run", "id": _processor_id(run, step_type), "credits": per_step}
        for step_type in steps
    ]
    return {**charged, "breakdown": breakdown}


def _results_at(run: EmulatedRun) -> str:
    """When the run's results, and the files its split step made, came to be."""
    history = run.history()
    return _iso(next((e.time for e in history if e.status in WITH_OUTPUTS), history[-1].time))


def _source_id(run: EmulatedRun) -> str:
    return _document(run).get("id") or f"file_{run.id[-12:]}"


STEP_NAMES = {"EXTRACT": "Extract invoice", "CLASSIFY": "Classify document", "SPLIT": "Split packet"}


def _field_metadata(facts: dict[str, Any], low: str | None) -> dict[str, Any]:
    return {
        name: {
            "ocrConfidence": 0.99,
            "logprobsConfidence": 0.41 if name == low else 0.97,
            "citations": [{"page": {"number": 1}, "referenceText": str(value)}],
        }
        for name, value in facts.items()
    }


def _extract_run(processor: dict[str, Any], document: str, reviewed: bool) -> dict[str, Any]:
    facts = invoice_facts(document)
    initial = {"value": misread(facts), "metadata": _field_metadata(misread(facts), REVIEWED_FIELD)}
    extract = {"object": "extract_run", **processor, "config": {"schema": SCHEMA}}
    if not reviewed:
        return {**extract, "output": initial}
    final = {"value": facts, "metadata": _field_metadata(facts, None)}
    edit = {"originalValue": initial["value"][REVIEWED_FIELD], "editedValue": facts[REVIEWED_FIELD]}
    return {
        **extract,
        "output": final,
        "initialOutput": initial,
        "reviewedOutput": final,
        "edited": True,
        "edits": {REVIEWED_FIELD: edit},
    }


def _classify_run(processor: dict[str, Any]) -> dict[str, Any]:
    output = {"id": "invoice", "type": "invoice", "confidence": 0.98, "insights": []}
    return {"object": "classify_run", **processor, "output": output, "config": {"classifications": CLASSES}}


def _split_run(
    processor: dict[str, Any],
    run: EmulatedRun,
    workflow: ExtendWorkflow,
    source: dict[str, Any],
    at: str,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    splits, files = [], []
    for part in range(1, SPLIT_PARTS + 1):
        split_file = _split_file(run.id, part, workflow)
        file_id, name = split_file.id, split_file.name
        files.append(_file_summary(file_id, name, at, parent=source["id"]))
        splits.append(
            {
                "type": "invoice",
                "observation": f"Invoice {part} of {SPLIT_PARTS}",
                "identifier": f"part-{part}",
                "startPage": part,
                "endPage": part,
                "name": name,
                "classificationId": "invoice",
                "id": f"split_{run.id[-12:]}_{part}",
                "fileId": file_id,
            }
        )
    config = {"splitClassifications": [{**CLASSES[0]}]}
    return {"object": "split_run", **processor, "output": {"splits": splits}, "config": config}, files


def _split_file(run_id: str, part: int, workflow: ExtendWorkflow) -> GeneratedFile:
    """A split's file; its id names its run, so a read finds it without any state kept."""
    file_id = f"file_{run_id.removeprefix(RUN_PREFIX)}{PART_MARK}{part}"
    return GeneratedFile(file_id, f"invoice-{part}.pdf", workflow.split_file_bytes)


def _find_split_file(
    request: Request, file_id: str, workflows: dict[str, ExtendWorkflow]
) -> tuple[GeneratedFile, EmulatedRun] | None:
    key, _, part = file_id.removeprefix("file_").rpartition(PART_MARK)
    run = request.app.state.emulator.runs.get(RUN_PREFIX + key)
    workflow = workflows.get(run.flow_id) if run is not None and run.platform == "extend" else None
    if workflow is None or "SPLIT" not in workflow.steps or not part.isdigit() or not 1 <= int(part) <= SPLIT_PARTS:
        return None
    return _split_file(run.id, int(part), workflow), run


def file_object(request: Request, file_id: str, workflows: dict[str, ExtendWorkflow]) -> dict[str, Any]:
    """``GET /files/{id}``: the File the run lists, with its ``parentFileId`` (the SDK's ``File``: present for
    files a splitter made) and a fresh ``presignedUrl`` (about 15 minutes)."""
    found = _find_split_file(request, file_id, workflows)
    if found is None:
        raise ApiError(404, "Not Found", f"File {file_id} not found")
    file, run = found
    summary = _file_summary(file.id, file.name, _results_at(run), parent=_source_id(run))
    return {**summary, "presignedUrl": store(request).sign(request, file)}
