"""What the platform contract (``tests/test_contract.py``) needs to know of each platform: one row each.

A row names a flow of the platform's emulator part and how to start it, the raw statuses the platform
documents, and its golden payloads (``tests/golden/<platform>/``). Everything else the contract reads from
the registry, so a new platform adds its row here and nothing else in the tests.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms.base import FlowRun, RunState
from airflow_flowruns.platforms.extend.emulator import EXTEND_INVOICE_WORKFLOW
from airflow_flowruns.platforms.noxus.emulator import NOXUS_DOCUMENT_WORKFLOW
from airflow_flowruns.platforms.stackai.emulator import STACKAI_FLOW, STACKAI_ORG
from airflow_flowruns.platforms.start import StartRequest
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_SMALL_FILE_FLOW
from support.emulator import Emulator, set_connection
from toy_platform.emulator import TOY_FLOW

BOUND = 10.0
"""Seconds a test waits for a run to reach a state it reaches within a poll or two: a bound on a hang."""


@dataclass(frozen=True)
class GoldenPage:
    """A golden listing page: how many runs it holds, and whether the platform says another page follows."""

    file: str
    runs: int
    more: bool


@dataclass(frozen=True)
class Contract:
    flow_id: str
    """A flow of the platform's emulator part whose runs succeed."""
    file_field: str
    """Where that flow takes its one document (``files={file_field: path}``)."""
    statuses: Mapping[str, RunState]
    """Every raw status the platform documents, and the state it means."""
    runs: tuple[str, ...]
    """Golden run objects, as a read (or a listing, where that is how runs are read) returns them."""
    pages: tuple[GoldenPage, ...]
    inputs: Mapping[str, Any] = field(default_factory=dict)
    """What else the flow takes besides the document."""
    extras: Mapping[str, Any] = field(default_factory=dict)
    """What the connection needs besides key and host."""
    workspace_listing: bool = True
    """Runs can be listed without naming a flow."""


CONTRACTS: dict[str, Contract] = {
    "tableflow": Contract(
        TABLEFLOW_SMALL_FILE_FLOW,
        "document",
        {
            "processing": RunState.RUNNING,
            "review": RunState.NEEDS_REVIEW,
            "completed": RunState.SUCCEEDED,
            "failed": RunState.FAILED,
        },
        ("run_started.json", "run.json"),
        (GoldenPage("flow_runs.json", 2, more=False),),
    ),
    "extend": Contract(
        EXTEND_INVOICE_WORKFLOW,
        "file",
        {
            "PENDING": RunState.QUEUED,
            "PROCESSING": RunState.RUNNING,
            "CANCELLING": RunState.RUNNING,
            "NEEDS_REVIEW": RunState.NEEDS_REVIEW,
            "PROCESSED": RunState.SUCCEEDED,
            "FAILED": RunState.FAILED,
            "REJECTED": RunState.FAILED,
            "CANCELLED": RunState.CANCELLED,
        },
        ("workflow_run_failed.json", "workflow_run_reviewed.json", "workflow_run_legacy.json"),
        (GoldenPage("runs_page.json", 4, more=True),),
    ),
    "noxus": Contract(
        NOXUS_DOCUMENT_WORKFLOW,
        "document",
        {
            "queued": RunState.QUEUED,
            "running": RunState.RUNNING,
            "awaiting_human_feedback": RunState.NEEDS_REVIEW,
            "completed": RunState.SUCCEEDED,
            "failed": RunState.FAILED,
            "stopped": RunState.CANCELLED,
        },
        ("run_failed.json", "run_queued.json", "run.json"),
        (GoldenPage("runs_page.json", 1, more=False),),
        inputs={"instructions": "Summarize"},
    ),
    "stackai": Contract(
        STACKAI_FLOW,
        "doc-0",
        {
            "PENDING": RunState.QUEUED,
            "RESUMED": RunState.RUNNING,
            "PAUSED": RunState.NEEDS_REVIEW,
            "COMPLETED": RunState.SUCCEEDED,
            "FAILED": RunState.FAILED,
            "CANCELLED": RunState.CANCELLED,
        },
        ("listing_item.json",),
        (GoldenPage("flow_runs.json", 2, more=False),),
        inputs={"in-0": "Check the renewal clause"},
        extras={"org_id": STACKAI_ORG, "flow_id": STACKAI_FLOW},
        workspace_listing=False,
    ),
    "toy": Contract(
        TOY_FLOW,
        "document",
        {
            "waiting": RunState.QUEUED,
            "working": RunState.RUNNING,
            "checking": RunState.NEEDS_REVIEW,
            "done": RunState.SUCCEEDED,
            "broken": RunState.FAILED,
        },
        ("run.json",),
        (GoldenPage("runs_page.json", 2, more=True),),
    ),
}


def contract_of(name: str) -> Contract:
    try:
        return CONTRACTS[name]
    except KeyError:
        raise KeyError(f"platform {name!r} is registered but has no row in tests/support/contract.py") from None


def connect(monkeypatch: pytest.MonkeyPatch, emulator: Emulator, name: str, **extra: Any) -> str:
    """A connection of platform ``name`` to the emulator, with what its row says it needs."""
    return set_connection(monkeypatch, f"contract_{name}", name, emulator.url, **contract_of(name).extras, **extra)


def seed(emulator: Emulator, name: str, count: int, processing_seconds: float = 0) -> list[str]:
    """Runs of the row's flow made without uploads, created a second apart until now, oldest first."""
    now = time.time()
    body = {
        "platform": name,
        "flow_id": contract_of(name).flow_id,
        "count": count,
        "created_from": now - count,
        "created_to": now,
        "scenario": {"processing_seconds": processing_seconds},
    }
    response = emulator.control.post("/seed", json=body)
    response.raise_for_status()
    ids: list[str] = response.json()["ids"]
    return ids


def start(hook: FlowRunsHook, name: str, document: Path) -> FlowRun:
    row = contract_of(name)
    request = StartRequest(row.flow_id, {row.file_field: document}, inputs=row.inputs, task_key="af-contract")
    return hook.start_run(request)


def read_until(hook: FlowRunsHook, name: str, run_id: str, state: RunState) -> FlowRun:
    """Read the run until it is in ``state``, for at most ``BOUND`` seconds."""
    deadline = time.monotonic() + BOUND
    while (run := hook.get_run(contract_of(name).flow_id, run_id)).state is not state:
        assert time.monotonic() < deadline, f"{name} run {run_id} is still {run.status}"
        time.sleep(0.05)
    return run
