"""The batch operator's options against the emulator: presigned URLs, per-document asset events, outputs landed
per document, a synchronous platform, and the trigger's progress lines and error event."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import Asset, Context, ObjectStoragePath, TaskDeferred
from airflow.sdk.execution_time.context import OutletEventAccessors
from airflow.sdk.io import attach
from airflow.triggers.base import TriggerEvent
from fsspec.implementations.memory import MemoryFileSystem
from pytest_mock import MockerFixture

from airflow_flowruns.batch import progress
from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.operators._document_events import document_alias
from airflow_flowruns.platforms.extend.emulator import EXTEND_INVOICE_WORKFLOW
from airflow_flowruns.platforms.stackai.emulator import STACKAI_FLOW, STACKAI_ORG
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_SMALL_FILE_FLOW
from airflow_flowruns.triggers.batch import FlowRunBatchTrigger
from support.emulator import Emulator, set_connection, task_instance
from support.runs import collect_events
from test_batch_operator import HELD, archive, batch, context_for, end_held, finish


class SigningFileSystem(MemoryFileSystem):
    """Object storage that presigns URLs, as s3fs and gcsfs do."""

    protocol = ("memory",)

    def sign(self, path: str, expiration: int = 100, **kwargs: Any) -> str:
        return f"https://files.example.com/{path.split('://')[-1]}?expires={expiration}&signature=s3cr3t"


@pytest.fixture
def bucket() -> str:
    attach(protocol="memory", fs=SigningFileSystem())
    for i in range(3):
        path = ObjectStoragePath(f"memory://bucket/archive/doc-{i}.pdf")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"%PDF-1.4\n%%EOF\n")
    return "memory://bucket/archive/"


def test_pass_by_url_sends_presigned_urls_and_no_document_byte(
    emulator: Emulator, bucket: str, mocker: MockerFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = set_connection(monkeypatch, "extend_urls", "extend", emulator.url)
    emulator.scenario(EXTEND_INVOICE_WORKFLOW, platform="extend", processing_seconds=0.1)
    emulator.clear_requests()
    result = finish(batch(conn, EXTEND_INVOICE_WORKFLOW, bucket, pass_by_url=True), context_for(mocker))
    assert result["counts"] == {"succeeded": 3}
    assert not [r for r in emulator.requests() if r["path"] == "/files/upload"]
    names = sorted(f["name"] for run in emulator.runs() for f in run["files"])
    assert sorted(name.split("~", 1)[1] for name in names) == ["doc-0.pdf", "doc-1.pdf", "doc-2.pdf"]


def test_pass_by_url_is_refused_up_front_where_it_cannot_work(
    emulator: Emulator, tableflow_conn: str, tmp_path: Path, mocker: MockerFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = archive(tmp_path / "a", 2)
    with pytest.raises(FlowRunsConfigError, match="TableFlow takes no file by URL"):
        batch(tableflow_conn, TABLEFLOW_SMALL_FILE_FLOW, f"{docs}/", pass_by_url=True).execute(context_for(mocker))
    conn = set_connection(monkeypatch, "extend_local", "extend", emulator.url)
    with pytest.raises(FlowRunsConfigError, match="presigns URLs"):
        batch(conn, EXTEND_INVOICE_WORKFLOW, f"{docs}/", pass_by_url=True).execute(context_for(mocker))
    assert emulator.runs() == []


def test_outputs_land_per_document_and_each_settled_document_is_an_asset_event(
    tableflow_conn: str, emulator: Emulator, tmp_path: Path, mocker: MockerFixture
) -> None:
    emulator.scenario(TABLEFLOW_SMALL_FILE_FLOW, processing_seconds=0.1)
    docs = archive(tmp_path / "a", 4)
    asset = Asset("s3://warehouse/invoices")
    op = batch(
        tableflow_conn, TABLEFLOW_SMALL_FILE_FLOW, f"{docs}/", outputs_to=str(tmp_path / "out"), document_asset=asset
    )
    assert document_alias(asset) in op.outlets
    events = OutletEventAccessors()
    result = op.execute(Context(ti=task_instance(mocker), outlet_events=events))  # type: ignore[typeddict-item]

    manifest = json.loads((tmp_path / "out" / "_MANIFEST.json").read_text())
    assert result["manifest"] == str(tmp_path / "out" / "_MANIFEST.json") and len(manifest["items"]) == 4
    for item in manifest["items"]:
        assert (Path(item["landing"]) / "_MANIFEST.json").is_file()
        assert Path(item["landing"]).relative_to(tmp_path / "out")
    announced = events[document_alias(asset)].asset_alias_events
    assert sorted(str(e.extra["document_key"]) for e in announced) == sorted(
        i["document_key"] for i in manifest["items"]
    )
    assert {e.extra["state"] for e in announced} == {"succeeded"}


def test_a_synchronous_platform_runs_each_document_in_the_worker(
    emulator: Emulator, tmp_path: Path, mocker: MockerFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = set_connection(
        monkeypatch, "stackai_batch", "stackai", emulator.url, org_id=STACKAI_ORG, flow_id=STACKAI_FLOW
    )
    docs = archive(tmp_path / "a", 3)
    op = batch(conn, STACKAI_FLOW, f"{docs}/", file_field="doc-0", inputs={"in-0": "Check"}, deferrable=True)
    result = op.execute(context_for(mocker))  # no deferral: the runs ended with their start calls
    assert result["counts"] == {"succeeded": 3} and len(emulator.runs()) == 3


def test_the_trigger_logs_progress_between_polls(
    tableflow_conn: str,
    emulator: Emulator,
    tmp_path: Path,
    mocker: MockerFixture,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    emulator.scenario(TABLEFLOW_SMALL_FILE_FLOW, processing_seconds=HELD)
    docs = archive(tmp_path / "a", 3)
    with pytest.raises(TaskDeferred) as deferred:
        batch(tableflow_conn, TABLEFLOW_SMALL_FILE_FLOW, f"{docs}/", deferrable=True).execute(context_for(mocker))
    _, kwargs = deferred.value.trigger.serialize()
    monkeypatch.setattr(progress, "PROGRESS_EVERY_SECONDS", 0.1)
    monkeypatch.setattr("airflow_flowruns.triggers.batch.PROGRESS_EVERY_SECONDS", 0.1)
    slow = FlowRunBatchTrigger(**{**kwargs, "poll_interval": 0.6})

    async def follow_a_second() -> list[TriggerEvent]:
        """The runs are held for a second of the trigger's wait, then end: the wait spans two polls or three."""
        following = asyncio.create_task(collect_events(slow))
        await asyncio.sleep(1.0)
        await asyncio.to_thread(end_held, emulator)
        return await following

    capsys.readouterr()
    (event,) = asyncio.run(follow_a_second())
    lines = [line for line in capsys.readouterr().out.splitlines() if "documents settled" in line]
    assert event.payload["outcome"] == "settled" and len(lines) >= 4  # more lines than the polls it took


def test_the_trigger_ends_with_an_error_event_on_a_bad_connection(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = set_connection(monkeypatch, "bad_key", "tableflow", emulator.url, password="wrong")
    trigger = FlowRunBatchTrigger(
        conn_id=conn,
        flow_id=TABLEFLOW_SMALL_FILE_FLOW,
        batch_key="af-0123456789abcdef",
        shard=0,
        shard_count=1,
        since=None,
        documents=3,
        pending=0,
        deadline=9e9,
        poll_interval=0.1,
    )
    (event,) = asyncio.run(collect_events(trigger))
    assert event.payload["outcome"] == "error" and "wrong" not in json.dumps(event.payload)
