"""The API key is kept nowhere: not in any table or text column of Airflow's database (XCom, trigger kwargs,
rendered template fields, ...), not in its logs, not in what the provider prints, also when a call is
retried or a run fails; a refused key is not repeated in the error; every key goes to the secret masker.

``make e2e`` runs the same scan against a real Airflow with a faulty emulator.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow.sdk import Connection
from airflow.sdk.log import redact

from airflow_flowruns.emulator import EmulatorServer
from airflow_flowruns.emulator.config import EmulatorConfig
from airflow_flowruns.exceptions import FlowRunsAuthError
from airflow_flowruns.hooks.flow_run import FlowRunsHook, platform_from_connection
from airflow_flowruns.platforms import PLATFORMS
from airflow_flowruns.platforms.extend import emulator as extend
from airflow_flowruns.platforms.extend.emulator import EXTEND_INVOICE_WORKFLOW
from airflow_flowruns.platforms.noxus import emulator as noxus
from airflow_flowruns.platforms.noxus.emulator import NOXUS_DOCUMENT_WORKFLOW
from airflow_flowruns.platforms.start import StartRequest
from airflow_flowruns.platforms.tableflow import emulator as tableflow
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_RECONCILIATION_FLOW, TABLEFLOW_SMALL_FILE_FLOW
from support.airflow import AIRFLOW, ROOT, airflow_env
from support.emulator import FAST_RETRIES, Emulator, set_connection

sys.path.insert(0, str(ROOT))
from e2e.secret_scan import Findings, scan_json, scan_sqlite, scan_tree

KEY = f"sk-test-{secrets.token_hex(12)}"
EXAMPLE_DAGS = {
    "tableflow": "tableflow_invoice_reconciliation",
    "extend": "extend_invoice_extraction",
    "noxus": "noxus_document_workflow",
}


@pytest.fixture(scope="module")
def keyed_emulator() -> Iterator[Emulator]:
    """An emulator of its own that accepts only ``KEY``, so the key is sent on every request."""
    with EmulatorServer(EmulatorConfig(api_keys=[KEY])) as server:
        yield Emulator(server.url)


def run_example(home: Path, emulator: Emulator, data: Path, platform: str) -> str:
    """``airflow dags test`` of a platform's example DAG, whatever its outcome: its output, as a user sees it."""
    conn = {"conn_type": platform, "password": KEY, "host": emulator.url, "extra": FAST_RETRIES}
    env = airflow_env(
        home, AIRFLOW_VAR_FLOWRUNS_DATA_DIR=str(data), **{f"AIRFLOW_CONN_{platform.upper()}_DEFAULT": json.dumps(conn)}
    )
    done = subprocess.run(
        [AIRFLOW, "dags", "test", EXAMPLE_DAGS[platform]], env=env, capture_output=True, text=True, timeout=300
    )
    return done.stdout + done.stderr


@pytest.mark.integration
def test_no_key_is_kept_through_retries_and_failures(
    airflow_home: Path, keyed_emulator: Emulator, pdfs: dict[str, Path]
) -> None:
    emulator, data = keyed_emulator, pdfs["po"].parent
    (data / "doc.pdf").write_bytes(pdfs["inv"].read_bytes())
    emulator.reset()
    # TableFlow succeeds through a refused start and a failed poll, both retried with a logged warning.
    emulator.fault(f"/v2/flows/{TABLEFLOW_RECONCILIATION_FLOW}/run", 429, headers={"Retry-After": "0"})
    emulator.fault("/v2/flows/runs/", 503, '{"error": "Unavailable", "message": "try again"}')
    # Extend's run fails, so its error text goes through the operator's exception and the task log.
    emulator.scenario(EXTEND_INVOICE_WORKFLOW, "extend", outcome="failed", error="OCR_FAILED: unreadable")
    outputs = [run_example(airflow_home, emulator, data, platform) for platform in EXAMPLE_DAGS]
    runs = {run["platform"]: run for run in emulator.runs()}

    assert {platform: run["status"] for platform, run in runs.items()} == {
        "tableflow": tableflow.STATUSES["completed"],
        "extend": extend.STATUSES["failed"],
        "noxus": noxus.STATUSES["completed"],
    }
    assert sum(request["status"] in (429, 503) for request in emulator.requests()) == 2
    findings = Findings(KEY, controls=tuple(run["id"] for run in runs.values()))
    scan_sqlite(findings, airflow_home / "airflow.db")
    scan_tree(findings, airflow_home)  # logs, if any, and the database file with its free pages
    scan_json(findings, "airflow dags test output", outputs, "outputs")
    scan_json(findings, "emulator request log", emulator.requests(), "emulator requests")
    assert findings.hits == [], findings.summary()
    # The scan read where the runs are kept, so it would have seen the key there too.
    assert all(findings.control_hits[run["id"]] > 0 for run in runs.values()), findings.control_hits
    assert findings.read["db values"] > 0 and findings.read["files"] > 0


@pytest.mark.parametrize(
    ("platform", "flow_id", "field"),
    [
        ("tableflow", TABLEFLOW_SMALL_FILE_FLOW, "document"),
        ("extend", EXTEND_INVOICE_WORKFLOW, "file"),
        ("noxus", NOXUS_DOCUMENT_WORKFLOW, "document"),
    ],
)
def test_a_refused_key_is_not_repeated(
    keyed_emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    pdf: Path,
    platform: str,
    flow_id: str,
    field: str,
) -> None:
    refused = f"sk-refused-{secrets.token_hex(12)}"
    conn_id = set_connection(monkeypatch, f"{platform}_refused", platform, keyed_emulator.url, password=refused)
    with pytest.raises(FlowRunsAuthError) as caught:
        FlowRunsHook(conn_id).start_run(StartRequest(flow_id=flow_id, files={field: pdf}, task_key="af-refused"))
    told = "".join(traceback.format_exception(caught.value)) + repr(caught.value) + caplog.text
    assert "401" in told
    assert refused not in told


@pytest.mark.parametrize("conn_type", sorted(PLATFORMS))
def test_key_is_registered_with_the_secret_masker(conn_type: str) -> None:
    key = f"sk-masked-{secrets.token_hex(12)}"
    assert redact(f"Authorization: Bearer {key}") == f"Authorization: Bearer {key}"
    conn = Connection(
        conn_id=f"{conn_type}_masked",
        conn_type=conn_type,
        password=key,
        host="http://127.0.0.1:9",
        extra='{"org_id": "org_emulator"}',
    )
    platform_from_connection(conn)
    assert redact(f"Authorization: Bearer {key}") == "Authorization: Bearer ***"
