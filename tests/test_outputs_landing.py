"""Landing outputs against the emulator: every platform, re-landing, reviews, failures midway, and the key
never reaching the presigned download host."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from airflow.providers.common.compat.sdk import Context

from airflow_flowruns.emulator.documents import invoice_facts, misread
from airflow_flowruns.exceptions import FlowRunsApiError, FlowRunsConfigError, FlowRunsError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.operators.flow_run import FlowRunOperator
from airflow_flowruns.operators.outputs import FlowRunOutputsOperator
from airflow_flowruns.platforms.extend.emulator import (
    EXTEND_INVOICE_WORKFLOW,
    EXTEND_REVIEW_WORKFLOW,
    EXTEND_SPLIT_WORKFLOW,
)
from airflow_flowruns.platforms.noxus.emulator import NOXUS_DOCUMENT_WORKFLOW
from airflow_flowruns.platforms.stackai.emulator import STACKAI_FLOW
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_RECONCILIATION_FLOW
from support.emulator import API_KEY, Emulator, set_connection
from test_outputs import sdk_models


@pytest.fixture
def extend_conn(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> str:
    return set_connection(monkeypatch, "extend_outputs", "extend", emulator.url)


@pytest.fixture
def invoice(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "acme-0042.pdf"
    path.parent.mkdir()
    path.write_bytes(b"%PDF-1.4\n% invoice\n%%EOF\n")
    return path


def start(conn: str, flow_id: str, files: dict[str, Any], **kwargs: Any) -> FlowRunOperator:
    return FlowRunOperator(
        task_id="t", flowruns_conn_id=conn, flow_id=flow_id, files=files, poll_interval=0.05, **kwargs
    )


def land(conn: str, run: Any, destination: Path | str, context: Context) -> dict[str, Any]:
    return FlowRunOutputsOperator(task_id="land", flowruns_conn_id=conn, run=run, destination=str(destination)).execute(
        context
    )


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def test_flow_run_operator_lands_extend_outputs_and_presigned_files_without_the_key(
    extend_conn: str, emulator: Emulator, invoice: Path, tmp_path: Path, context: Context
) -> None:
    out = tmp_path / "out"
    result = start(extend_conn, EXTEND_SPLIT_WORKFLOW, {"file": invoice}, outputs_to=str(out)).execute(context)
    folder = out / "extend" / EXTEND_SPLIT_WORKFLOW / result["id"]
    landing = result["landing"]
    assert landing == {
        "path": str(folder),
        "manifest": str(folder / "_MANIFEST.json"),
        "outputs": len(read_json(folder / "outputs.json")["outputs"]),
        "files": 2,
        "file_references": 0,
        "bytes": sum(entry["size"] for entry in read_json(folder / "_MANIFEST.json")["files"]),
        "written": True,
    }
    manifest = read_json(folder / "_MANIFEST.json")
    assert [entry["path"] for entry in manifest["files"]][:2] == ["run.json", "outputs.json"]
    for entry in manifest["files"]:
        data = (folder / entry["path"]).read_bytes()
        assert len(data) == entry["size"]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert read_json(folder / "run.json")["id"] == result["id"]
    assert manifest["run_updated_at"] and not list(folder.parent.glob("*.partial"))
    fields = {o["name"]: o["value"] for o in read_json(folder / "outputs.json")["outputs"] if o["kind"] == "field"}
    assert fields["vendor"] == invoice_facts(invoice.name)["vendor"]
    # XCom: paths, counts and bytes, never output values
    assert fields["vendor"] not in json.dumps(result) and "outputs" not in result
    requests = emulator.requests()
    storage = [r for r in requests if r["path"].startswith("/_storage/")]
    lookups = [r for r in requests if r["path"].startswith("/files/file_")]
    assert len(storage) == len(lookups) == 2
    assert all(r["status"] == 200 and r["credentials"] is False for r in storage)
    assert all(r["credentials"] is True for r in lookups)


def test_presigned_host_refuses_a_request_that_carries_the_key(extend_conn: str, emulator: Emulator) -> None:
    """The emulator stands for the storage host as S3 behaves: credentials next to a signature are refused."""
    import httpx

    run = start(extend_conn, EXTEND_SPLIT_WORKFLOW, {"file": Path(__file__)}).execute({"ti": _ti()})
    headers = {"Authorization": f"Bearer {API_KEY}", "x-extend-api-version": "2026-02-09"}
    body = httpx.get(f"{emulator.url}/workflow_runs/{run['id']}", headers=headers).json()
    file_id = body["stepRuns"][0]["result"]["splitRun"]["output"]["splits"][0]["fileId"]
    url = httpx.get(f"{emulator.url}/files/{file_id}", headers=headers).json()["presignedUrl"]
    refused = httpx.get(url, headers={"Authorization": f"Bearer {API_KEY}"})
    assert refused.status_code == 400 and b"InvalidArgument" in refused.content
    assert httpx.get(url).status_code == 200
    assert httpx.get(url.replace("Signature=", "Signature=0")).status_code == 403
    logged = [r for r in emulator.requests() if r["path"].startswith("/_storage/")]
    assert [r["credentials"] for r in logged] == [True, False, False]


def _ti() -> Any:
    from unittest.mock import MagicMock

    return MagicMock(dag_id="d", task_id="t", run_id="r", map_index=-1, try_number=1)


def test_relanding_an_unchanged_run_writes_nothing(
    extend_conn: str, emulator: Emulator, invoice: Path, tmp_path: Path, context: Context
) -> None:
    out = tmp_path / "out"
    run = start(extend_conn, EXTEND_SPLIT_WORKFLOW, {"file": invoice}).execute(context)
    first = land(extend_conn, run, out, context)
    manifest = Path(first["manifest"])
    before = manifest.stat().st_mtime_ns, manifest.read_bytes()
    emulator.clear_requests()
    again = land(extend_conn, run["id"], out, context)
    assert again == {**first, "written": False}
    assert (manifest.stat().st_mtime_ns, manifest.read_bytes()) == before
    assert not [r for r in emulator.requests() if r["path"].startswith(("/_storage/", "/files/"))]
    # a landing file that went missing is noticed: the run is landed again
    next(Path(first["path"]).glob("files/*/*")).unlink()
    assert land(extend_conn, run["id"], out, context)["written"] is True


def test_a_review_that_changed_outputs_is_landed_again_with_both_values(
    extend_conn: str, emulator: Emulator, invoice: Path, tmp_path: Path, context: Context
) -> None:
    out = tmp_path / "out"
    run = start(extend_conn, EXTEND_REVIEW_WORKFLOW, {"file": invoice}, on_review="succeed").execute(context)
    assert run["state"] == "needs_review"
    first = land(extend_conn, run, out, context)
    outputs = Path(first["path"]) / "outputs.json"
    facts = invoice_facts(invoice.name)
    total = next(o for o in read_json(outputs)["outputs"] if o["name"] == "total")
    assert total["value"] == misread(facts)["total"] and "reviewed_value" not in total
    emulator.set_status(run["id"], "PROCESSED")
    second = land(extend_conn, run, out, context)
    assert second["written"] is True and second["path"] == first["path"]
    document = read_json(outputs)
    total = next(o for o in document["outputs"] if o["name"] == "total")
    assert document["reviewed"] is True and document["state"] == "succeeded"
    assert (total["value"], total["initial_value"], total["reviewed_value"]) == (
        facts["total"],
        misread(facts)["total"],
        facts["total"],
    )
    vendor = next(o for o in document["outputs"] if o["name"] == "vendor")
    assert "initial_value" not in vendor
    assert read_json(Path(second["manifest"]))["status"] == "PROCESSED"


def test_failure_midway_keeps_the_previous_landing_and_removes_the_staging_folder(
    extend_conn: str, emulator: Emulator, invoice: Path, tmp_path: Path, context: Context
) -> None:
    out = tmp_path / "out"
    emulator.scenario(EXTEND_SPLIT_WORKFLOW, platform="extend", review=True)
    run = start(extend_conn, EXTEND_SPLIT_WORKFLOW, {"file": invoice}, on_review="succeed").execute(context)
    first = land(extend_conn, run, out, context)
    folder = Path(first["path"])
    landed = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    stamps = {path: path.stat().st_mtime_ns for path in landed}
    _, cut_second = [e["path"] for e in read_json(folder / "_MANIFEST.json")["files"][2:]]
    emulator.set_status(run["id"], "PROCESSED")  # the review changes the run: the next landing rewrites it
    # the first file downloads, the second breaks off in the middle of its body on every try
    emulator.fault(f"/_storage/{cut_second.split('/')[1]}/", 200, kind="drop", count=100)
    with pytest.raises(FlowRunsApiError, match="download file"):
        land(extend_conn, run, out, context)
    assert {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()} == landed
    assert {path: path.stat().st_mtime_ns for path in landed} == stamps  # not rewritten with the same bytes
    assert sorted(path.name for path in folder.parent.iterdir()) == [folder.name]  # no staging folder left
    emulator.control.delete("/faults").raise_for_status()
    second = land(extend_conn, run, out, context)
    assert second["written"] is True
    assert sorted(path.name for path in folder.parent.iterdir()) == [folder.name]
    assert read_json(folder / "_MANIFEST.json")["status"] == "PROCESSED"


def test_a_first_landing_that_fails_leaves_no_manifest(
    extend_conn: str, emulator: Emulator, invoice: Path, tmp_path: Path, context: Context
) -> None:
    run = start(extend_conn, EXTEND_SPLIT_WORKFLOW, {"file": invoice}).execute(context)
    emulator.fault("/_storage/", 500, count=100)
    with pytest.raises(FlowRunsApiError):
        land(extend_conn, run, tmp_path / "out", context)
    assert not list((tmp_path / "out").rglob("_MANIFEST.json"))


def test_noxus_output_files_come_from_the_api_with_the_key(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, invoice: Path, tmp_path: Path, context: Context
) -> None:
    conn = set_connection(monkeypatch, "noxus_outputs", "noxus", emulator.url)
    files = {"document": invoice}
    op = start(conn, NOXUS_DOCUMENT_WORKFLOW, files, inputs={"instructions": "x"}, outputs_to=str(tmp_path))
    result = op.execute(context)
    folder = Path(result["landing"]["path"])
    document = read_json(folder / "outputs.json")
    kinds = {o["name"]: o["kind"] for o in document["outputs"]}
    assert kinds == {"summary": "text", "fields": "data", "report": "file"}
    (file,) = document["files"]
    assert (folder / file["path"]).stat().st_size == 16 * 1024 and result["landing"]["files"] == 1
    (download,) = [r for r in emulator.requests() if r["path"].startswith("/v1/file/")]
    assert download["credentials"] is True and download["status"] == 200


def test_tableflow_drive_files_land_as_references(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path], tmp_path: Path, context: Context
) -> None:
    files = {"purchase_order": pdfs["po"], "invoice": pdfs["inv"]}
    result = start(tableflow_conn, TABLEFLOW_RECONCILIATION_FLOW, files, outputs_to=str(tmp_path)).execute(context)
    landing = result["landing"]
    assert (landing["files"], landing["file_references"]) == (0, 1)
    document = read_json(Path(landing["path"]) / "outputs.json")
    (reference,) = document["files"]
    assert reference["downloaded"] is False and "drive_files" in reference["note"]
    assert not (Path(landing["path"]) / "files").exists()


def test_stackai_outputs_land_by_node_and_stay_out_of_xcom(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, invoice: Path, tmp_path: Path, context: Context
) -> None:
    conn = set_connection(monkeypatch, "stackai_outputs", "stackai", emulator.url, org_id="org_emulator")
    result = start(conn, STACKAI_FLOW, {"doc-0": invoice}, outputs_to=str(tmp_path)).execute(context)
    folder = Path(result["landing"]["path"])
    document = read_json(folder / "outputs.json")
    assert [(o["name"], o["kind"]) for o in document["outputs"]] == [("out-0", "text")]
    assert document["outputs"][0]["value"] == json.loads(read_json(folder / "run.json")["outputs"])["out-0"]
    # with outputs_to the outputs are in outputs.json only: XCom holds where they went, never them
    assert "outputs" not in result and "output_path" not in result
    assert document["outputs"][0]["value"] not in json.dumps(result)
    both = start(conn, STACKAI_FLOW, {"doc-0": invoice}, outputs_to=str(tmp_path), output_path=str(tmp_path / "o"))
    with pytest.raises(FlowRunsConfigError, match="output_path and outputs_to"):
        both.execute(context)
    assert len(emulator.runs()) == 1  # refused before anything was sent


def test_output_values_are_never_logged(
    extend_conn: str, invoice: Path, tmp_path: Path, context: Context, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    run = start(extend_conn, EXTEND_INVOICE_WORKFLOW, {"file": invoice}).execute(context)
    land(extend_conn, run, tmp_path, context)
    facts = invoice_facts(invoice.name)
    logged = caplog.text
    assert "Landed run" in logged
    assert facts["vendor"] not in logged and facts["invoice_number"] not in logged and API_KEY not in logged


def test_runs_that_cannot_be_landed_say_why(
    extend_conn: str, emulator: Emulator, invoice: Path, tmp_path: Path, context: Context
) -> None:
    run = start(extend_conn, EXTEND_INVOICE_WORKFLOW, {"file": invoice}, wait_for_completion=False).execute(context)
    emulator.set_status(run["id"], "FAILED", error="broken")
    with pytest.raises(FlowRunsError, match="only succeeded runs"):
        land(extend_conn, run, tmp_path, context)
    with pytest.raises(FlowRunsConfigError, match="run must be a run id"):
        land(extend_conn, 42, tmp_path, context)
    with pytest.raises(FlowRunsConfigError, match="destination"):
        land(extend_conn, run, "  ", context)
    with pytest.raises(FlowRunsConfigError, match="wait_for_completion=False"):
        start(
            extend_conn, EXTEND_INVOICE_WORKFLOW, {"file": invoice}, outputs_to="/tmp", wait_for_completion=False
        ).execute(context)
    assert len(emulator.runs()) == 1  # refused before anything was uploaded


def test_a_watcher_event_payload_names_the_run(
    extend_conn: str, invoice: Path, tmp_path: Path, context: Context
) -> None:
    run = start(extend_conn, EXTEND_INVOICE_WORKFLOW, {"file": invoice}).execute(context)
    event = {"platform": "extend", "flow_id": run["flow_id"], "run_id": run["id"], "state": "succeeded"}
    assert land(extend_conn, event, tmp_path, context)["path"].endswith(run["id"])


def test_landed_outputs_are_the_tasks_output_dataset(
    extend_conn: str, emulator: Emulator, invoice: Path, tmp_path: Path, context: Context
) -> None:
    run = start(extend_conn, EXTEND_INVOICE_WORKFLOW, {"file": invoice}).execute(context)
    op = FlowRunOutputsOperator(task_id="land", flowruns_conn_id=extend_conn, run=run, destination=str(tmp_path))
    landing = op.execute(context)
    lineage = op.get_openlineage_facets_on_complete(None)
    (source,) = lineage.inputs
    (landed,) = lineage.outputs
    assert (source.namespace, source.name) == (f"extend://{urlsplit(emulator.url).netloc}", EXTEND_INVOICE_WORKFLOW)
    assert (landed.namespace, landed.name) == ("file", landing["path"])
    assert lineage.run_facets["externalQuery"].externalQueryId == run["id"]


@pytest.mark.integration
def test_emulated_outputs_are_valid_for_the_official_sdks(
    extend_conn: str,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    invoice: Path,
    tmp_path: Path,
    context: Context,
) -> None:
    """The emulator's step runs and Noxus output files parse into the SDKs' own models, so the readers are
    not tested against a shape only the emulator has."""
    reviewed = start(extend_conn, EXTEND_REVIEW_WORKFLOW, {"file": invoice}, on_review="succeed").execute(context)
    emulator.set_status(reviewed["id"], "PROCESSED")
    split = start(extend_conn, EXTEND_SPLIT_WORKFLOW, {"file": invoice}).execute(context)
    extend = FlowRunsHook(extend_conn)
    runs = [extend.get_run(None, run["id"]).raw for run in (reviewed, split)]
    assert sdk_models("extend", *runs, tmp=tmp_path) == [
        ["ClassifyResult:ClassifyRun", "ExtractResult:ExtractRun"],
        ["SplitResult:SplitRun", "ExtractResult:ExtractRun"],
    ]
    conn = set_connection(monkeypatch, "noxus_sdk_outputs", "noxus", emulator.url)
    noxus = start(conn, NOXUS_DOCUMENT_WORKFLOW, {"document": invoice}, inputs={"instructions": "x"}).execute(context)
    raw = FlowRunsHook(conn).get_run(noxus["flow_id"], noxus["id"]).raw
    assert sdk_models("noxus", raw, tmp=tmp_path) == [[raw["output"]["report"]["id"]]]


def test_flow_run_operator_reports_the_landing_as_a_second_output_dataset(
    extend_conn: str, invoice: Path, tmp_path: Path, context: Context
) -> None:
    op = start(extend_conn, EXTEND_INVOICE_WORKFLOW, {"file": invoice}, outputs_to=str(tmp_path))
    result = op.execute(context)
    run_dataset, landed = op.get_openlineage_facets_on_complete(None).outputs
    assert run_dataset.name == EXTEND_INVOICE_WORKFLOW
    assert (landed.namespace, landed.name) == ("file", result["landing"]["path"])


def test_a_deferred_operator_lands_when_it_resumes(
    extend_conn: str, invoice: Path, tmp_path: Path, context: Context
) -> None:
    started = start(extend_conn, EXTEND_INVOICE_WORKFLOW, {"file": invoice}).execute(context)
    resumed = start(extend_conn, EXTEND_INVOICE_WORKFLOW, {"file": invoice}, outputs_to=str(tmp_path), deferrable=True)
    result = resumed.execute_complete(context, {"outcome": "settled", "run": started})
    assert result["id"] == started["id"] and result["landing"]["written"] is True
    assert Path(result["landing"]["manifest"]).exists()


def test_a_download_cut_midway_is_retried_then_fails_without_showing_the_presigned_url(
    extend_conn: str, emulator: Emulator, invoice: Path, tmp_path: Path, context: Context
) -> None:
    run = start(extend_conn, EXTEND_SPLIT_WORKFLOW, {"file": invoice}).execute(context)
    emulator.fault("/_storage/", 200, kind="drop", count=100)
    with pytest.raises(FlowRunsApiError) as failed:
        land(extend_conn, run, tmp_path, context)
    assert "Signature" not in str(failed.value) and "/_storage/" not in str(failed.value)
    assert failed.value.__cause__ is None
    cut = [r for r in emulator.requests() if r["path"].startswith("/_storage/")]
    assert len(cut) == 3  # the first try and the connection's two retries, each with a fresh presigned URL
    assert len([r for r in emulator.requests() if r["path"].startswith("/files/file_")]) == 3
