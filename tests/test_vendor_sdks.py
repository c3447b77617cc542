"""The emulator speaks the real wire format: the vendors' official SDKs parse every answer into their models.

The SDKs run in their own virtualenv (``make test`` creates ``.venv-sdk``), as separate processes talking
HTTP to the emulator.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from airflow_flowruns.platforms.extend.emulator import EXTEND_INVOICE_WORKFLOW
from airflow_flowruns.platforms.noxus.emulator import NOXUS_DOCUMENT_WORKFLOW
from support.airflow import ROOT
from support.emulator import API_KEY, Emulator

SDK_PYTHON = ROOT / ".venv-sdk" / "bin" / "python"
SCRIPTS = Path(__file__).parent / "vendor_sdk"


def run_sdk(script: str, emulator: Emulator, workflow: str, pdf: Path) -> dict[str, Any]:
    assert SDK_PYTHON.exists(), "the SDK virtualenv is missing: run `make test`, which creates .venv-sdk"
    done = subprocess.run(
        [str(SDK_PYTHON), str(SCRIPTS / script), emulator.url, API_KEY, workflow, str(pdf)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.integration
def test_extend_sdk_parses_upload_create_retrieve_list_cancel(emulator: Emulator, pdf: Path) -> None:
    seen = run_sdk("extend_client.py", emulator, EXTEND_INVOICE_WORKFLOW, pdf)
    run, package = emulator.runs()
    assert seen["run_id"] == run["id"] and seen["retrieved"][0] == run["id"]
    assert seen["file_id"].startswith("file_") and seen["listed"] == [run["id"]]
    assert seen["cancelled"] == "CANCELLING"
    assert seen["types"] == ["File", "WorkflowRun", "WorkflowRun", "WorkflowRunsListResponse", "WorkflowRun"]
    assert run["metadata"] == {"k": "v"}
    assert seen["package"] == [package["id"], ["doc.pdf", "second.pdf"]], "a package of two files is one run"


@pytest.mark.integration
def test_noxus_sdk_parses_upload_start_get_list_stop(emulator: Emulator, pdf: Path) -> None:
    seen = run_sdk("noxus_client.py", emulator, NOXUS_DOCUMENT_WORKFLOW, pdf)
    (run,) = emulator.runs()
    assert seen["run_id"] == run["id"] and seen["fetched"] == [run["id"], "queued"]
    assert seen["listed"] == [run["id"]] and seen["stopped"] == "stopped"
    assert seen["types"] == ["File", "Run", "Run", "Run"]
    assert run["uploads"] == [{"field": "document", "filename": "doc.pdf", "size": pdf.stat().st_size}]
