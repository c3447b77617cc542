"""Extend's batch start, ``POST /workflow_runs/batch``, as extend-ai 1.20.0 models it.

The request (``workflow_runs/raw_client.py`` ``create_batch``) is ``workflow`` (``WorkflowReference``),
``inputs`` (1 to 1,000 ``WorkflowRunsCreateBatchRequestInputsItem``: ``file`` by url, id or text, optional
``metadata`` and ``secrets``) and an optional ``priority`` (1 to 100). The answer
(``WorkflowRunsCreateBatchResponse``) is ``batchId`` and nothing else. Every input becomes one run, created
as ``POST /workflow_runs`` creates one, that carries the ``batchId`` (a field of both ``WorkflowRun`` and
``WorkflowRunSummary``) and is found again by listing runs with the ``batchId`` filter. Every input is
checked before the first run is created, so a refused batch starts nothing.

The Extend routes (``emulator.py``) include this router in theirs, and this route creates runs with theirs:
it imports them when it answers, by which time they are imported, so either module can be imported first.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from airflow_flowruns.emulator.errors import ApiError
from airflow_flowruns.emulator.state import new_id

MAX_INPUTS = 1000
"""``create_batch``'s docstring: "The array must contain at least 1 input and at most 1000 inputs"."""
PRIORITIES = (1, 100)
"""``create_batch``'s docstring: an optional ``priority`` value (1-100), lower runs first."""
INPUT_FIELDS = frozenset({"file", "metadata", "secrets"})
"""The fields of ``WorkflowRunsCreateBatchRequestInputsItem``: no ``package``, no ``outputs``."""

router = APIRouter()


@router.post("/workflow_runs/batch")
async def create_batch(request: Request) -> dict[str, Any]:
    from airflow_flowruns.platforms.extend.emulator import new_run, run_record, workflow_request

    state, body, workflow = await workflow_request(request)
    inputs = _inputs(body)
    _check_priority(body.get("priority"))
    batch_id = f"batch_{new_id(12)}"
    version = body["workflow"].get("version")
    records = [{**run_record(state, item, version), "batchId": batch_id} for item in inputs]
    for record in records:
        new_run(state, workflow, record)
    return {"batchId": batch_id}


def _inputs(body: dict[str, Any]) -> list[dict[str, Any]]:
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= MAX_INPUTS:
        raise ApiError(400, "Bad Request", f"inputs must list 1 to {MAX_INPUTS} inputs")
    for index, item in enumerate(inputs):
        if not isinstance(item, dict) or "file" not in item:
            raise ApiError(400, "Bad Request", f"inputs[{index}].file is required")
        unknown = sorted(set(item) - INPUT_FIELDS)
        if unknown:
            raise ApiError(400, "Bad Request", f"inputs[{index}] has unknown fields: {', '.join(unknown)}")
    return inputs


def _check_priority(priority: Any) -> None:
    low, high = PRIORITIES
    if priority is not None and (type(priority) is not int or not low <= priority <= high):
        raise ApiError(400, "Bad Request", f"priority must be an integer from {low} to {high}")
