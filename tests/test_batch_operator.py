"""FlowRunBatchOperator against the emulator over HTTP: one task, one run per document, retries per document."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pytest
from airflow.providers.common.compat.sdk import Context, TaskDeferred
from pytest_mock import MockerFixture

from airflow_flowruns.batch.ledger import LEDGER_KEY
from airflow_flowruns.exceptions import FlowRunsConfigError, FlowRunsError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.operators.batch import BATCH_XCOM_KEY, FlowRunBatchOperator, batch_key
from airflow_flowruns.platforms.extend.emulator import EXTEND_INVOICE_WORKFLOW
from airflow_flowruns.platforms.noxus.emulator import NOXUS_DOCUMENT_WORKFLOW
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_SMALL_FILE_FLOW
from airflow_flowruns.triggers.batch import FlowRunBatchTrigger
from support.emulator import Emulator, pushed, set_connection, task_instance
from support.runs import run_trigger
from support.state_store import MemoryStateStore


def archive(root: Path, count: int) -> Path:
    """A folder of ``count`` small PDFs, some in a sub-folder, and a hidden file that is no document."""
    for i in range(count):
        path = root / ("2024" if i % 2 else "2025") / f"doc-{i:04d}.pdf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"%PDF-1.4\n% document " + str(i).encode() + b"\n%%EOF\n")
    (root / ".DS_Store").write_bytes(b"x")
    return root


def batch(conn_id: str, flow_id: str, documents: Any, **kwargs: Any) -> FlowRunBatchOperator:
    return FlowRunBatchOperator(
        task_id="backfill", flowruns_conn_id=conn_id, flow_id=flow_id, documents=documents, poll_interval=0.2, **kwargs
    )


def context_for(mocker: MockerFixture, try_number: int = 1, store: MemoryStateStore | None = None) -> Context:
    ti = task_instance(mocker, try_number=try_number)
    return Context(ti=ti, **({"task_state_store": store} if store is not None else {}))  # type: ignore[typeddict-item]


def finish(op: FlowRunBatchOperator, context: Context) -> dict[str, Any]:
    """Run the task to its end as Airflow would: through the triggerer each time it defers."""
    try:
        return op.execute(context)
    except TaskDeferred as deferred:
        return finish_from(op, context, deferred)


def runs_by_document(emulator: Emulator) -> Counter[str]:
    return Counter(run["metadata"].get("airflow_document_key") for run in emulator.runs())


HELD = 600.0
"""Processing time that keeps a batch's runs running until the test ends them: the batch must defer however
slowly the machine starts them."""


def end_held(emulator: Emulator, failing: int = 0) -> None:
    """End the held TableFlow runs: the first ``failing`` created fail, the others complete."""
    for index, run in enumerate(sorted(emulator.runs(), key=lambda run: run["created_at"])):
        if index < failing:
            emulator.set_status(run["id"], "failed", "unreadable")
        else:
            emulator.set_status(run["id"], "completed")


def fail_a_first_try(
    op: FlowRunBatchOperator, emulator: Emulator, context: Context, *, failing: int, documents: int
) -> None:
    """Run a TableFlow batch's first try to its report with its runs held, then the first ``failing`` of them
    failed and the others completed; the runs a retry starts afterwards end by themselves."""
    emulator.scenario(TABLEFLOW_SMALL_FILE_FLOW, processing_seconds=HELD)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    end_held(emulator, failing=failing)
    with pytest.raises(FlowRunsError, match=f"{failing} of {documents} documents failed"):
        finish_from(op, context, deferred.value)
    emulator.scenario(TABLEFLOW_SMALL_FILE_FLOW, processing_seconds=0.1)


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    return archive(tmp_path / "archive", 12)


def test_a_folder_runs_once_per_document_and_reports_counts(
    tableflow_conn: str, emulator: Emulator, docs: Path, mocker: MockerFixture, tmp_path: Path
) -> None:
    emulator.scenario(TABLEFLOW_SMALL_FILE_FLOW, processing_seconds=0.1)
    emulator.clear_requests()
    context = context_for(mocker)
    op = batch(tableflow_conn, TABLEFLOW_SMALL_FILE_FLOW, f"{docs}/", manifest_to=str(tmp_path / "m.json"))
    result = op.execute(context)

    expected = {f"{'2024' if i % 2 else '2025'}/doc-{i:04d}.pdf": 1 for i in range(12)}
    assert runs_by_document(emulator) == Counter(expected)
    calls = Counter(f"{r['method']} {r['path']}" for r in emulator.requests())
    # the flow is read once for the whole execution, never once per document, nor again to report
    assert calls["GET /v2/flows"] == 1 and calls[f"POST /v2/flows/{TABLEFLOW_SMALL_FILE_FLOW}/run"] == 12
    assert result["documents"] == 12 and result["counts"] == {"succeeded": 12} and result["failed_documents"] == []
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert manifest["counts"] == {"succeeded": 12} and len(manifest["items"]) == 12
    assert manifest["usage"] is None and result["usage"] is None, "TableFlow reports no usage"
    by_key = {run["metadata"]["airflow_document_key"]: run["id"] for run in emulator.runs()}
    assert {item["document_key"]: item["run_id"] for item in manifest["items"]} == by_key
    assert pushed(context["ti"])[BATCH_XCOM_KEY] == [result]  # type: ignore[arg-type]  # a MagicMock


def test_deferred_batch_waits_in_one_trigger_with_counts_only(
    tableflow_conn: str, emulator: Emulator, docs: Path, mocker: MockerFixture, tmp_path: Path
) -> None:
    emulator.scenario(TABLEFLOW_SMALL_FILE_FLOW, processing_seconds=HELD)
    context = context_for(mocker)
    manifest = str(tmp_path / "out" / "_MANIFEST.json")
    op = batch(
        tableflow_conn, TABLEFLOW_SMALL_FILE_FLOW, f"{docs}/**/*.pdf", deferrable=True, outputs_to=str(tmp_path / "out")
    )
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    trigger = deferred.value.trigger
    assert isinstance(trigger, FlowRunBatchTrigger)
    _, kwargs = trigger.serialize()
    assert kwargs["documents"] == 12 and kwargs["pending"] == 0 and len(json.dumps(kwargs)) < 1000
    end_held(emulator)
    event = run_trigger(trigger)
    assert event["outcome"] == "settled" and event["counts"] == {"succeeded": 12} and event["manifest"] == manifest
    result = op.execute_complete(context, event, **(deferred.value.kwargs or {}))
    assert result["counts"] == {"succeeded": 12} and len(emulator.runs()) == 12 and result["manifest"] == manifest


def test_extend_starts_documents_through_the_batch_endpoint(
    emulator: Emulator, docs: Path, mocker: MockerFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = set_connection(monkeypatch, "extend_batch", "extend", emulator.url)
    emulator.scenario(EXTEND_INVOICE_WORKFLOW, platform="extend", processing_seconds=0.1)
    emulator.clear_requests()
    result = finish(batch(conn, EXTEND_INVOICE_WORKFLOW, f"{docs}/", deferrable=True), context_for(mocker))

    assert result["counts"] == {"succeeded": 12}
    calls = Counter(f"{r['method']} {r['path']}" for r in emulator.requests())
    assert calls["POST /workflow_runs/batch"] == 1 and calls["POST /files/upload"] == 12
    assert calls["POST /workflow_runs"] == 0
    assert len({run["metadata"]["airflow_document_key"] for run in emulator.runs()}) == 12


@pytest.mark.parametrize("landed", [True, False], ids=["read for landing", "as listed"])
def test_an_extend_batch_tags_its_runs_and_sums_their_usage_in_the_manifest_and_xcom(
    emulator: Emulator, tmp_path: Path, mocker: MockerFixture, monkeypatch: pytest.MonkeyPatch, landed: bool
) -> None:
    """Each run carries the usage tags of the DAG and task; each manifest item its run's usage (from the run read
    for its landing, else from the listing), and the manifest head and the XCom summary the totals (two steps, a
    credit a page each, of one-page PDFs)."""
    conn = set_connection(monkeypatch, "extend_usage", "extend", emulator.url)
    emulator.scenario(EXTEND_INVOICE_WORKFLOW, platform="extend", processing_seconds=0.1)
    docs = archive(tmp_path / "archive", 3)
    manifest_to = tmp_path / "out" / "_MANIFEST.json"
    where = {"outputs_to": str(manifest_to.parent)} if landed else {"manifest_to": str(manifest_to)}
    op = batch(conn, EXTEND_INVOICE_WORKFLOW, f"{docs}/", deferrable=True, **where)
    result = finish(op, Context(ti=task_instance(mocker, dag_id="archive.2024", task_id="backfill")))

    assert {tuple(run["metadata"]["extend:usage_tags"]) for run in emulator.runs()} == {
        ("airflow-dag-archive-2024", "airflow-task-backfill")
    }
    manifest = json.loads(manifest_to.read_text())
    assert [item["usage"] for item in manifest["items"]] == [{"credits": 2.0, "pages": 1, "tokens": None}] * 3
    assert manifest["usage"] == result["usage"] == {"credits": 6.0, "pages": 3, "tokens": None}


def test_noxus_documents_are_found_by_their_file_names(
    emulator: Emulator, docs: Path, mocker: MockerFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = set_connection(monkeypatch, "noxus_batch", "noxus", emulator.url)
    emulator.scenario(NOXUS_DOCUMENT_WORKFLOW, platform="noxus", processing_seconds=0.1)
    op = batch(conn, NOXUS_DOCUMENT_WORKFLOW, f"{docs}/", file_field="document", inputs={"instructions": "all"})
    result = op.execute(context_for(mocker))
    assert result["counts"] == {"succeeded": 12} and len(emulator.runs()) == 12


@pytest.mark.parametrize("kept", [True, False], ids=["ledger", "lookup"])
def test_a_retry_reruns_only_failed_documents(
    tableflow_conn: str, emulator: Emulator, docs: Path, mocker: MockerFixture, kept: bool
) -> None:
    store = MemoryStateStore() if kept else None
    op = batch(tableflow_conn, TABLEFLOW_SMALL_FILE_FLOW, f"{docs}/", deferrable=True)
    fail_a_first_try(op, emulator, context_for(mocker, store=store), failing=3, documents=12)

    result = finish(op, context_for(mocker, try_number=2, store=store))
    assert result["counts"] == {"succeeded": 12} and result["started"] == 3
    assert sorted(runs_by_document(emulator).values()) == [1] * 9 + [2] * 3


def test_a_worker_dying_mid_submission_leaves_no_document_started_twice(
    tableflow_conn: str, emulator: Emulator, docs: Path, mocker: MockerFixture
) -> None:
    emulator.scenario(TABLEFLOW_SMALL_FILE_FLOW, processing_seconds=0.1)
    store = MemoryStateStore()
    hook_start = "airflow_flowruns.hooks.flow_run.FlowRunsHook.start_run"
    real = __import__("airflow_flowruns.hooks.flow_run", fromlist=["FlowRunsHook"]).FlowRunsHook.start_run
    calls = {"n": 0}

    def dies_after_five(self: Any, request: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 6:
            raise SystemExit("worker killed")
        return real(self, request)

    mocker.patch(hook_start, dies_after_five)
    with pytest.raises(SystemExit):
        batch(tableflow_conn, TABLEFLOW_SMALL_FILE_FLOW, f"{docs}/").execute(context_for(mocker, store=store))
    assert len(emulator.runs()) == 5
    mocker.stopall()
    result = batch(tableflow_conn, TABLEFLOW_SMALL_FILE_FLOW, f"{docs}/").execute(
        context_for(mocker, try_number=2, store=store)
    )
    assert result["counts"] == {"succeeded": 12} and result["started"] == 7
    assert set(runs_by_document(emulator).values()) == {1}
    assert LEDGER_KEY in store.values


def test_max_in_flight_starts_documents_as_room_frees_up(
    tableflow_conn: str, emulator: Emulator, docs: Path, mocker: MockerFixture
) -> None:
    emulator.scenario(TABLEFLOW_SMALL_FILE_FLOW, processing_seconds=HELD)
    op = batch(tableflow_conn, TABLEFLOW_SMALL_FILE_FLOW, f"{docs}/", deferrable=True, max_in_flight=4)
    context = context_for(mocker, store=MemoryStateStore())
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    assert len(emulator.runs()) == 4
    _, kwargs = deferred.value.trigger.serialize()
    assert kwargs["pending"] == 8
    end_held(emulator)
    emulator.scenario(TABLEFLOW_SMALL_FILE_FLOW, processing_seconds=0.1)  # the later starts end by themselves
    result = finish_from(op, context, deferred.value)
    assert result["counts"] == {"succeeded": 12} and set(runs_by_document(emulator).values()) == {1}


def finish_from(op: FlowRunBatchOperator, context: Context, deferred: TaskDeferred) -> dict[str, Any]:
    while True:
        try:
            return op.execute_complete(context, run_trigger(deferred.trigger), **(deferred.kwargs or {}))
        except TaskDeferred as again:
            deferred = again


def test_bad_arguments_fail_before_any_run(
    tableflow_conn: str, emulator: Emulator, docs: Path, mocker: MockerFixture, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    for documents, message in [
        (str(docs), "neither a folder written with a trailing '/'"),
        (f"{tmp_path}/empty/", "matched no files"),
        ([{"files": {"document": str(docs / "2025/doc-0000.pdf")}, "key": "a"}] * 2, "appear more than once"),
    ]:
        with pytest.raises(FlowRunsConfigError, match=message):
            batch(tableflow_conn, TABLEFLOW_SMALL_FILE_FLOW, documents).execute(context_for(mocker))
    with pytest.raises(FlowRunsConfigError, match="shard must be"):
        batch(tableflow_conn, TABLEFLOW_SMALL_FILE_FLOW, f"{docs}/", shard=4, shard_count=4).execute(
            context_for(mocker)
        )
    assert emulator.runs() == []


def test_shards_split_an_archive_without_overlap(
    tableflow_conn: str, emulator: Emulator, docs: Path, mocker: MockerFixture
) -> None:
    emulator.scenario(TABLEFLOW_SMALL_FILE_FLOW, processing_seconds=0.1)
    totals = []
    for shard in range(3):
        ti: MagicMock = task_instance(mocker, map_index=shard)
        op = batch(tableflow_conn, TABLEFLOW_SMALL_FILE_FLOW, f"{docs}/", shard=shard, shard_count=3)
        totals.append(op.execute(Context(ti=ti))["documents"])
    assert sum(totals) == 12 and all(totals)
    assert set(runs_by_document(emulator).values()) == {1} and len(emulator.runs()) == 12
    assert batch_key(Context(ti=task_instance(mocker, map_index=0))) == batch_key(
        Context(ti=task_instance(mocker, map_index=2))
    )


def test_a_renamed_file_is_a_new_document_and_the_wait_is_for_it(
    tableflow_conn: str, emulator: Emulator, tmp_path: Path, mocker: MockerFixture
) -> None:
    docs = archive(tmp_path / "a", 2)
    emulator.scenario(TABLEFLOW_SMALL_FILE_FLOW, processing_seconds=0.05)
    op = batch(tableflow_conn, TABLEFLOW_SMALL_FILE_FLOW, f"{docs}/", manifest_to=str(tmp_path / "m.json"))
    op.execute(context_for(mocker))
    (docs / "2024" / "doc-0001.pdf").rename(docs / "2024" / "renamed.pdf")
    emulator.scenario(TABLEFLOW_SMALL_FILE_FLOW, processing_seconds=1.5)

    result = finish(op, context_for(mocker, try_number=2))
    # the old name's succeeded run must not stand in for the new name's run still under way
    assert result["counts"] == {"succeeded": 2}
    items = {item["document_key"]: item["state"] for item in json.loads((tmp_path / "m.json").read_text())["items"]}
    assert items == {"2025/doc-0000.pdf": "succeeded", "2024/renamed.pdf": "succeeded"}
    assert len(emulator.runs()) == 3


def test_a_document_the_platform_refuses_is_set_aside_and_the_others_go_on(
    tableflow_conn: str, emulator: Emulator, docs: Path, mocker: MockerFixture, tmp_path: Path
) -> None:
    emulator.scenario(TABLEFLOW_SMALL_FILE_FLOW, processing_seconds=0.1)
    big = docs / "2025" / "doc-0004.pdf"
    big.write_bytes(b"%PDF-1.4\n" + b"0" * (2 * 1024 * 1024))  # over the flow's 1 MiB
    store = MemoryStateStore()
    op = batch(tableflow_conn, TABLEFLOW_SMALL_FILE_FLOW, f"{docs}/", deferrable=True, manifest_to=str(tmp_path / "m"))
    with pytest.raises(FlowRunsError, match="1 of 12 documents failed") as failed:
        finish(op, context_for(mocker, store=store))
    assert "2025/doc-0004.pdf" in str(failed.value) and len(emulator.runs()) == 11
    items = {i["document_key"]: i for i in json.loads((tmp_path / "m").read_text())["items"]}
    refused = items["2025/doc-0004.pdf"]
    assert refused["state"] == "not_started" and "doc-0004.pdf" in refused["status"]

    big.write_bytes(b"%PDF-1.4\n%%EOF\n")  # fixed; the retry sends it again and nothing else
    result = finish(op, context_for(mocker, try_number=2, store=store))
    assert result["counts"] == {"succeeded": 12} and result["started"] == 1 and len(emulator.runs()) == 12


def test_a_batch_whose_runs_all_settled_ends_without_deferring(
    tableflow_conn: str, emulator: Emulator, docs: Path, mocker: MockerFixture
) -> None:
    emulator.scenario(TABLEFLOW_SMALL_FILE_FLOW, processing_seconds=0.05)
    op = batch(tableflow_conn, TABLEFLOW_SMALL_FILE_FLOW, f"{docs}/", deferrable=True)
    finish(op, context_for(mocker))
    # a retry after every run settled counts them in the worker, and never defers to a trigger firing at once
    result = op.execute(context_for(mocker, try_number=2))
    assert result["counts"] == {"succeeded": 12} and result["started"] == 0 and len(emulator.runs()) == 12


START = f"/v2/flows/{TABLEFLOW_SMALL_FILE_FLOW}/run"


def test_a_rerun_whose_start_fails_ambiguously_never_follows_the_run_it_replaces(
    tableflow_conn: str, emulator: Emulator, docs: Path, mocker: MockerFixture
) -> None:
    emulator.scenario(TABLEFLOW_SMALL_FILE_FLOW, processing_seconds=0.05)
    op = batch(tableflow_conn, TABLEFLOW_SMALL_FILE_FLOW, f"{docs}/", max_failed=None)
    op.execute(context_for(mocker))
    failed = emulator.runs()[0]
    emulator.set_status(failed["id"], "failed", "unreadable")
    emulator.fault(START, 503, method="POST")  # the re-run's start: unknown whether it started

    result = op.execute(context_for(mocker, try_number=2))
    assert result["counts"] == {"succeeded": 12} and result["started"] == 1
    document = failed["metadata"]["airflow_document_key"]
    assert runs_by_document(emulator)[document] == 2


def test_a_start_failing_every_time_sets_its_document_aside_and_the_others_go_on(
    tableflow_conn: str, emulator: Emulator, docs: Path, mocker: MockerFixture
) -> None:
    emulator.scenario(TABLEFLOW_SMALL_FILE_FLOW, processing_seconds=0.05)
    emulator.fault(START, 503, method="POST", count=3)  # the first document's three attempts
    op = batch(tableflow_conn, TABLEFLOW_SMALL_FILE_FLOW, f"{docs}/", max_failed=1)
    result = op.execute(context_for(mocker))
    assert result["counts"] == {"succeeded": 11, "not_started": 1} and len(emulator.runs()) == 11
    assert result["failed_documents"] == ["2024/doc-0001.pdf"]


def test_ten_documents_set_aside_in_a_row_fail_the_task(
    emulator: Emulator, docs: Path, mocker: MockerFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = set_connection(monkeypatch, "tableflow_down", "tableflow", emulator.url)
    emulator.fault(START, 422, method="POST", count=50)
    with pytest.raises(FlowRunsError, match="422"):
        batch(conn, TABLEFLOW_SMALL_FILE_FLOW, f"{docs}/").execute(context_for(mocker))
    assert emulator.runs() == []


def test_a_killed_task_sends_no_further_start(
    tableflow_conn: str, emulator: Emulator, docs: Path, mocker: MockerFixture
) -> None:
    op = batch(tableflow_conn, TABLEFLOW_SMALL_FILE_FLOW, f"{docs}/")
    real = FlowRunsHook.start_run

    def killed_after_three(self: FlowRunsHook, request: Any) -> Any:
        run = real(self, request)
        if len(emulator.runs()) == 3:
            op.on_kill()  # what Airflow calls on SIGTERM, from the task's own process
        return run

    mocker.patch.object(FlowRunsHook, "start_run", killed_after_three)
    with pytest.raises(FlowRunsError, match="stopped while starting"):
        op.execute(context_for(mocker))
    assert len(emulator.runs()) == 3


def test_metadata_on_a_platform_without_it_is_refused_before_any_start(
    emulator: Emulator, docs: Path, mocker: MockerFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = set_connection(monkeypatch, "noxus_meta", "noxus", emulator.url)
    op = batch(conn, NOXUS_DOCUMENT_WORKFLOW, f"{docs}/", file_field="document", metadata={"a": 1})
    with pytest.raises(FlowRunsConfigError, match="Noxus runs keep no metadata"):
        op.execute(context_for(mocker))
    assert emulator.runs() == [] and emulator.requests() == []
