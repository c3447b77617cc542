"""What a Noxus workflow run produced: its ``output`` object, and the files ``GET /v1/file/{id}`` serves.

A completed document run's output has a text ``summary``, the invoice's ``fields`` and a ``report`` file,
shaped as noxus-sdk 0.6.0's ``File`` model (``id``, ``uri`` ``spot://{id}``, ``name``, ``content_type``,
``source_type``, ``source_metadata``).
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from airflow_flowruns.emulator.documents import GeneratedFile, invoice_facts
from airflow_flowruns.emulator.errors import ApiError
from airflow_flowruns.emulator.presigned import stream_file
from airflow_flowruns.emulator.state import EmulatedRun

REPORT_BYTES = 16 * 1024


def _report(run_id: str) -> GeneratedFile:
    return GeneratedFile(str(uuid.uuid5(uuid.NAMESPACE_URL, f"noxus-report/{run_id}")), "report.pdf", REPORT_BYTES)


def output(run: EmulatedRun) -> dict[str, Any]:
    uploads = run.record.get("uploads") or [{"filename": "document"}]
    report = _report(run.id)
    return {
        "summary": f"Processed {len(uploads)} file(s)",
        "fields": invoice_facts(uploads[0]["filename"]),
        "report": {
            "id": report.id,
            "uri": f"spot://{report.id}",
            "name": report.name,
            "content_type": report.content_type,
            "source_type": "Document",
            "source_metadata": None,
        },
    }


def download(request: Request, file_id: str) -> StreamingResponse:
    """``GET /v1/file/{id}``: a completed run's report, found by trying each run (no state is kept per file)."""
    for run in request.app.state.emulator.runs_of("noxus"):
        if run.status == "completed" and _report(run.id).id == file_id:
            return stream_file(_report(run.id))
    raise ApiError(404, "Not Found", f"File {file_id} not found")
