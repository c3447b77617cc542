"""The I/O-free platform layer on the vendors' own payloads (``tests/golden/``, each naming its source).

No server: runs are parsed, listing pages read, list calls and start requests built, exactly as each
platform module does it for the hook and the triggerer. What every platform does alike is the platform
contract's (``tests/test_contract.py``); these are each platform's own values.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from airflow_flowruns.exceptions import FlowRunsConfigError, FlowRunsResponseError
from airflow_flowruns.platforms import PLATFORMS
from airflow_flowruns.platforms.base import ApiCall, ConnectionSettings, Platform, RunQuery, RunsPage, RunState
from airflow_flowruns.platforms.batching import BatchDocument
from airflow_flowruns.platforms.start import StartedBy, StartRequest
from airflow_flowruns.platforms.usage import Usage
from support.golden import golden

EXTRAS: dict[str, dict[str, Any]] = {"stackai": {"org_id": "org_1"}}


def platform(name: str) -> Platform:
    settings = ConnectionSettings("c", "key", PLATFORMS[name].default_base_url, EXTRAS.get(name, {}))
    return PLATFORMS[name](settings)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def listing_page(name: str, fixture: str, query: RunQuery) -> tuple[ApiCall, RunsPage]:
    """The first list call a platform builds for ``query``, and the page it reads from the golden body."""
    call = platform(name).list_runs_call(query)
    return call, platform(name).parse_runs_page(golden(name, fixture), call, query)


def unix(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@pytest.mark.parametrize(
    ("name", "fixture", "expected"),
    [
        (
            "tableflow",
            "run_started.json",
            {
                "id": "Wp7kRnT2mX4vQ9bL",
                "flow_id": "dk4g1tUg1uHLs8YU",
                "state": RunState.RUNNING,
                "status": "processing",
                "error": None,
                "metadata": {"customer_id": "12345", "order_number": "PO-2024-001"},
                "created_at": unix(1682366228),
                "started_at": unix(1682366228),
                "ended_at": None,
                "duration_ms": None,
                "url": "https://api.tableflow.com/v2/flows/runs/Wp7kRnT2mX4vQ9bL",
            },
        ),
        (
            "extend",
            "workflow_run_failed.json",
            {
                "id": "workflow_run_8k9m-xyzAB_Pqrst-Nvw4",
                "flow_id": "workflow_BMdfq_yWM3sT-ZzvCnA3f",
                "state": RunState.FAILED,
                "status": "FAILED",
                "error": "PROCESSING_ERROR: The document could not be parsed",
                "metadata": {"airflow_task_key": "af-0123456789abcdef01234567", "customer": "acme"},
                "created_at": at("2026-02-10T08:00:01Z"),
                "started_at": at("2026-02-10T08:00:02Z"),
                "ended_at": at("2026-02-10T08:00:32Z"),
                "duration_ms": 30000,
                "url": "https://dashboard.extend.ai/workflows/runs/workflow_run_8k9m-xyzAB_Pqrst-Nvw4",
            },
        ),
        (
            "noxus",
            "run_failed.json",
            {
                "id": "9d2f7c10-4b1e-4a55-9c1e-2f6a8b0d1e77",
                "flow_id": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
                "state": RunState.FAILED,
                "status": "failed",
                "error": "Node 'Extract' failed: unreadable PDF",
                "metadata": {},
                "created_at": at("2026-02-10T08:00:00Z"),
                "started_at": None,
                "ended_at": at("2026-02-10T08:00:10Z"),
                "duration_ms": None,
            },
        ),
    ],
)
def test_a_run_is_parsed_from_the_vendors_payload(name: str, fixture: str, expected: dict[str, Any]) -> None:
    run = platform(name).parse_run(golden(name, fixture))
    assert {key: getattr(run, key) for key in expected} == expected


def test_tableflow_per_flow_listing_is_a_bare_array_of_whole_runs() -> None:
    _, page = listing_page("tableflow", "flow_runs.json", RunQuery(flow_id="dk4g1tUg1uHLs8YU"))
    assert [(r.id, r.state, r.error, r.duration_ms) for r in page.runs] == [
        ("fr_abc123def456", RunState.SUCCEEDED, None, 30000),
        (
            "fr_def456ghi789",
            RunState.FAILED,
            "Extraction step 'Extract Invoice' failed: Template not found",
            30000,
        ),
    ]
    assert page.runs[1].metadata == {"customer_id": "54321"}
    assert page.next_call is None, "the per-flow listing has no pages"


def test_extend_listing_page_of_summaries_carries_no_metadata_and_no_failure_text() -> None:
    call, page = listing_page("extend", "runs_page.json", RunQuery(flow_id="workflow_BMdfq_yWM3sT-ZzvCnA3f"))
    assert [(r.id, r.state, r.status) for r in page.runs] == [
        ("workflow_run_newest0000000000000a", RunState.RUNNING, "PROCESSING"),
        ("workflow_run_review00000000000000b", RunState.NEEDS_REVIEW, "NEEDS_REVIEW"),
        ("workflow_run_rejected000000000000c", RunState.FAILED, "REJECTED"),
        ("workflow_run_failed00000000000000d", RunState.FAILED, "FAILED"),
    ]
    assert all(r.metadata == {} for r in page.runs), "a summary has no metadata"
    assert page.runs[2].error == "rejected in review: Totals do not match", "the summary has the rejection note"
    assert page.runs[3].error is None, "but no failure reason: that is only on the full run"
    assert page.runs[0].created_at == at("2026-02-10T09:00:00Z")
    token = "xK9mLPqRtN3vS8wF5hB2cQ==:zWvUxYjM4nKpL7aDgE9HbTcR2mAyX3/Q+CNkfBSw1dZ="
    assert page.next_call is not None and page.next_call.params == {**(call.params or {}), "nextPageToken": token}
    assert not platform("extend").listing_has_metadata


def test_noxus_workspace_page_reads_the_reference_example() -> None:
    _, page = listing_page("noxus", "runs_page.json", RunQuery())
    assert [(r.id, r.state, r.flow_id) for r in page.runs] == [
        ("3c90c3cc-0d44-4b50-8888-8dd25736052a", RunState.QUEUED, "3c90c3cc-0d44-4b50-8888-8dd25736052a")
    ]
    assert page.next_call is None, "page 2 of 1 is the last"


def test_stackai_listing_reads_the_documented_fields() -> None:
    _, page = listing_page("stackai", "flow_runs.json", RunQuery(flow_id="flow_1"))
    assert [(r.id, r.state, r.error) for r in page.runs] == [
        ("5b0f3a52-7c1d-4e8a-9f2b-6d4c3e2a1b00", RunState.FAILED, "Node llm-0 timed out"),
        ("5b0f3a52-7c1d-4e8a-9f2b-6d4c3e2a1b01", RunState.SUCCEEDED, None),
    ]
    assert platform("stackai").task_key_of(page.runs[0]) == "af-0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("name", "query", "method", "path", "params"),
    [
        ("tableflow", RunQuery(), "GET", "/flows/runs", {"limit": 100, "offset": 0}),
        (
            "tableflow",
            RunQuery(flow_id="f1", states=frozenset({RunState.FAILED}), page_size=5000),
            "GET",
            "/flows/runs",
            {"limit": 1000, "offset": 0, "flow_id": "f1", "status": "failed"},
        ),
        (
            "extend",
            RunQuery(flow_id="workflow_1", states=frozenset({RunState.NEEDS_REVIEW})),
            "GET",
            "/workflow_runs",
            {
                "sortBy": "createdAt",
                "sortDir": "desc",
                "maxPageSize": 100,
                "workflowId": "workflow_1",
                "status": "NEEDS_REVIEW",
            },
        ),
        (
            "extend",
            RunQuery(states=frozenset({RunState.FAILED})),
            "GET",
            "/workflow_runs",
            {"sortBy": "createdAt", "sortDir": "desc", "maxPageSize": 100},
        ),
        ("noxus", RunQuery(flow_id="wf", page_size=500), "GET", "/v1/workflows/wf/runs", {"page": 1, "size": 100}),
        ("noxus", RunQuery(), "GET", "/v1/runs", {"page": 1, "size": 100}),
        (
            "stackai",
            RunQuery(
                flow_id="flow_1",
                states=frozenset({RunState.NEEDS_REVIEW, RunState.FAILED}),
                created_after=datetime(2026, 2, 10, 8, tzinfo=UTC),
                created_before=datetime(2026, 2, 11, 8, tzinfo=UTC),
                user_id="af-1",
            ),
            "GET",
            "/analytics/org/org_1/flows/flow_1",
            {
                "page": 0,
                "page_size": 100,
                "state": "PAUSED,FAILED",
                "start_date": "2026-02-10T08:00:00+00:00",
                "end_date": "2026-02-11T08:00:00+00:00",
                "user_id": "af-1",
            },
        ),
        (
            "stackai",
            RunQuery(flow_id="flow_1", page_size=10),
            "GET",
            "/analytics/org/org_1/flows/flow_1",
            {
                "page": 0,
                "page_size": 10,
            },
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_list_calls_send_what_each_api_filters_on(
    name: str, query: RunQuery, method: str, path: str, params: dict[str, Any]
) -> None:
    call = platform(name).list_runs_call(query)
    assert (call.method, call.path, dict(call.params or {})) == (method, path, params)


class Recorder:
    """The ``Api`` a start is written against: records each call and answers from a script (an iterator
    answers each call by that name with its next item)."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.calls: list[ApiCall] = []

    def call(self, call: ApiCall) -> Any:
        self.calls.append(call)
        answer = self.answers[call.name]
        return next(answer) if isinstance(answer, Iterator) else answer


def documents(tmp_path: Path, *names: str) -> list[Path]:
    paths = [tmp_path / name for name in names]
    for path in paths:
        path.write_bytes(b"%PDF")
    return paths


def uploads(name: str, fixture: str, ids: list[str]) -> Iterator[dict[str, Any]]:
    """The golden upload answer, once per id."""
    return iter([{**golden(name, fixture), "id": file_id} for file_id in ids])


def test_tableflow_start_request_is_the_documented_multipart_form(tmp_path: Path) -> None:
    po, inv = tmp_path / "po.pdf", tmp_path / "invoice.pdf"
    po.write_bytes(b"%PDF")
    inv.write_bytes(b"%PDF")
    flows = [
        {
            "id": "dk4g1tUg1uHLs8YU",
            "active": True,
            "file_input_config": {"file_fields": [{"key": "purchase_order", "required": True}, {"key": "invoice"}]},
        }
    ]
    api = Recorder({"list flows": flows, "start run": golden("tableflow", "run_started.json")})
    request = StartRequest(
        flow_id="dk4g1tUg1uHLs8YU",
        files={"purchase_order": po, "invoice": inv},
        run_name="PO-123 Reconciliation",
        metadata={"customer_id": "12345"},
        file_metadata={"purchase_order": {"po_number": "PO-123"}},
        file_guidance={"purchase_order": "strip REV:0"},
    )
    run = platform("tableflow").start_run(api, request)
    start = api.calls[-1]
    assert (start.method, start.path, start.idempotent) == ("POST", "/flows/dk4g1tUg1uHLs8YU/run", False)
    assert dict(start.data or {}) == {
        "name": "PO-123 Reconciliation",
        "metadata": '{"customer_id": "12345"}',
        "purchase_order_metadata": '{"po_number": "PO-123"}',
        "purchase_order_guidance": "strip REV:0",
    }
    assert [(f.field, f.filename) for f in start.files] == [("purchase_order", "po.pdf"), ("invoice", "invoice.pdf")]
    assert run.id == "Wp7kRnT2mX4vQ9bL"


def test_extend_start_uploads_then_sends_one_file_by_id(tmp_path: Path) -> None:
    pdf = tmp_path / "invoice.pdf"
    pdf.write_bytes(b"%PDF")
    api = Recorder(
        {
            "upload file": {"id": "file_xK9mLPqRtN3vS8wF5hB2cQ"},
            "start run": golden("extend", "workflow_run_failed.json"),
        }
    )
    request = StartRequest(
        flow_id="workflow_BMdfq_yWM3sT-ZzvCnA3f", files={"file": pdf}, flow_version="3", task_key="af-1"
    )
    platform("extend").start_run(api, request)
    assert [c.path for c in api.calls] == ["/files/upload", "/workflow_runs"]
    assert api.calls[-1].json == {
        "workflow": {"id": "workflow_BMdfq_yWM3sT-ZzvCnA3f", "version": "3"},
        "file": {"id": "file_xK9mLPqRtN3vS8wF5hB2cQ"},
        "metadata": {"airflow_task_key": "af-1"},
    }


def test_extend_package_start_uploads_each_file_then_sends_one_package(tmp_path: Path) -> None:
    """Two to fifty files: one run over a ``package`` of the uploaded ids (the SDK's ``WorkflowRunPackageParams``)."""
    ids = ["file_a00000000000000000001", "file_b00000000000000000002", "file_c00000000000000000003"]
    api = Recorder(
        {
            "upload file": uploads("extend", "file_uploaded.json", ids),
            "start run": golden("extend", "workflow_run_failed.json"),
        }
    )
    paths = tuple(documents(tmp_path, "a.pdf", "b.pdf", "c.pdf"))
    request = StartRequest(
        flow_id="workflow_BMdfq_yWM3sT-ZzvCnA3f", files={"file": paths}, metadata={"batch": "7"}, task_key="af-1"
    )
    run = platform("extend").start_run(api, request)
    assert [c.path for c in api.calls] == ["/files/upload"] * 3 + ["/workflow_runs"]
    assert [[(f.field, f.path.name) for f in c.files] for c in api.calls[:3]] == [
        [("file", "a.pdf")],
        [("file", "b.pdf")],
        [("file", "c.pdf")],
    ]
    start = api.calls[-1]
    assert (start.method, start.idempotent) == ("POST", False)
    assert start.json == {
        "workflow": {"id": "workflow_BMdfq_yWM3sT-ZzvCnA3f"},
        "package": {"files": [{"id": file_id} for file_id in ids]},
        "metadata": {"batch": "7", "airflow_task_key": "af-1"},
    }
    assert run.id == "workflow_run_8k9m-xyzAB_Pqrst-Nvw4"


def test_noxus_start_uploads_files_and_sends_them_with_the_inputs(tmp_path: Path) -> None:
    """A file input is ``{"uri", "name"}`` of its upload, a list of files a list of those; plain inputs go
    as given; the workflow is checked first, before anything is uploaded."""
    workflow = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
    ids = ["0d1e7700-0000-4000-8000-000000000001", "0d1e7700-0000-4000-8000-000000000002"]
    document, appendix = documents(tmp_path, "invoice.pdf", "appendix.pdf")
    uploaded = [{**golden("noxus", "file_uploaded.json"), "id": i, "uri": f"noxus://files/{i}"} for i in ids]
    api = Recorder(
        {
            "check workflow": golden("noxus", "runs_page.json"),
            "upload file": iter(uploaded),
            "start run": golden("noxus", "run_queued.json"),
        }
    )
    request = StartRequest(
        flow_id=workflow,
        files={"document": document, "attachments": (appendix,)},
        inputs={"instructions": "Summarize"},
        flow_version="7",
    )
    run = platform("noxus").start_run(api, request)
    runs = f"/v1/workflows/{workflow}/runs"
    assert [(c.method, c.path) for c in api.calls] == [
        ("GET", runs),
        ("POST", "/v1/file"),
        ("POST", "/v1/file"),
        ("POST", runs),
    ]
    assert [(f.field, f.path.name, f.content_type) for c in api.calls[1:3] for f in c.files] == [
        ("file", "invoice.pdf", "application/pdf"),
        ("file", "appendix.pdf", "application/pdf"),
    ]
    assert api.calls[-1].idempotent is False
    assert api.calls[-1].json == {
        "input": {
            "instructions": "Summarize",
            "document": {"uri": f"noxus://files/{ids[0]}", "name": "invoice.pdf"},
            "attachments": [{"uri": f"noxus://files/{ids[1]}", "name": "appendix.pdf"}],
        },
        "workflow_version_id": "7",
    }
    assert (run.id, run.state, run.flow_id) == ("5e8c1a2b-3d4f-4a6b-8c9d-0e1f2a3b4c5d", RunState.QUEUED, workflow)


@pytest.mark.parametrize("listed", [True, False], ids=["listed", "not listed yet"])
def test_stackai_start_puts_documents_then_runs_as_the_task_key(tmp_path: Path, listed: bool) -> None:
    """Documents go to the flow's document node under the task key as ``user_id``; the run call sends the
    inputs with that ``user_id``; the run is read from the listing, or stands as the answer until it shows."""
    key = "af-0123456789abcdef01234567"
    answer = golden("stackai", "run_answer.json")
    item = {**golden("stackai", "flow_runs.json")[1], "user_id": key}
    assert item["run_id"] == answer["run_id"]
    api = Recorder({"upload document": {}, "run flow": answer, "list runs": [item] if listed else []})
    (document,) = documents(tmp_path, "contract.pdf")
    request = StartRequest(flow_id="flow_1", files={"doc-0": document}, inputs={"in-0": "hello"}, task_key=key)
    run = platform("stackai").start_run(api, request)
    upload, ran, listing = api.calls
    assert (upload.method, upload.path) == ("POST", f"/documents/org_1/flow_1/doc-0/{key}")
    assert [(f.field, f.path.name) for f in upload.files] == [("file", "contract.pdf")]
    assert (ran.method, ran.path, ran.json, ran.idempotent) == (
        "POST",
        "/inference/v0/run/org_1/flow_1",
        {"in-0": "hello", "user_id": key},
        False,
    )
    assert (listing.path, dict(listing.params or {})) == (
        "/analytics/org/org_1/flows/flow_1",
        {"page": 0, "page_size": 100, "user_id": key},
    )
    assert (run.id, run.state, run.outputs) == (answer["run_id"], RunState.SUCCEEDED, answer["outputs"])
    assert run.metadata == {"user_id": key}
    assert run.usage == (Usage(tokens=400) if listed else None), "the listing's total_tokens; the answer has none"


# --- usage ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fixture", "expected"),
    [
        ("extend", "workflow_run_failed.json", Usage(credits=2, pages=2)),
        ("extend", "workflow_run_reviewed.json", Usage(credits=12, pages=3)),
        ("extend", "workflow_run_usage.json", Usage(credits=7.5, pages=5)),
        ("extend", "workflow_run_legacy.json", None),
        ("stackai", "listing_item.json", Usage(tokens=812)),
        ("noxus", "run_failed.json", None),
        ("tableflow", "run.json", None),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_usage_is_read_from_what_each_platform_reports(name: str, fixture: str, expected: Usage | None) -> None:
    """Extend: ``usage.credits`` and the files' ``pageCount``s; StackAI: ``total_tokens``; Noxus and TableFlow
    report none, and neither does an Extend run without ``usage`` or files (legacy billing)."""
    run = platform(name).parse_run(golden(name, fixture))
    assert run.usage == expected
    assert run.to_xcom()["usage"] == (expected.to_json() if expected else None)


def test_extend_listing_summaries_carry_their_usage() -> None:
    """``WorkflowRunSummary.usage`` is a ``RunUsageSummary``: the runs a listing (an export) returns have usage."""
    _, page = listing_page("extend", "runs_page.json", RunQuery())
    assert [run.usage for run in page.runs] == [Usage(credits=1, pages=2)] * 4


def test_stackai_listing_items_carry_their_token_counts() -> None:
    _, page = listing_page("stackai", "flow_runs.json", RunQuery(flow_id="flow_1"))
    assert [run.usage for run in page.runs] == [Usage(tokens=1200), Usage(tokens=400)]


def extend_files(*files: dict[str, Any]) -> dict[str, Any]:
    """The golden package run with ``files`` for its files."""
    body = golden("extend", "workflow_run_usage.json")
    template = body["files"][0]
    return {**body, "files": [{**template, **file} for file in files]}


@pytest.mark.parametrize(
    ("files", "pages"),
    [
        ([{"metadata": {"pageCount": 3}}, {"metadata": {}}], None),
        ([{"metadata": {"pageCount": 3}}, {"type": "IMG", "metadata": {"pageCount": None}}], None),
        ([{"metadata": {"pageCount": 2.5}}], None),
        ([{"metadata": {"pageCount": 4}}, {"parentFileId": "file_1", "metadata": {"pageCount": 2}}], 4),
    ],
    ids=["no count", "null count", "fractional", "split part"],
)
def test_extend_pages_are_unknown_where_a_file_has_no_whole_count(files: list[dict[str, Any]], pages: int) -> None:
    """A file without ``pageCount`` (only PDF and DOCX have one) leaves the run's pages unknown rather than
    undercounted; a file a splitter made is part of an input file, not counted again."""
    run = platform("extend").parse_run(extend_files(*files))
    assert run.usage == Usage(credits=7.5, pages=pages)


def test_extend_usage_without_credits_is_refused_as_unreadable() -> None:
    """``RunUsage.credits`` is required: an answer without it is not a run this provider can read."""
    body = {**golden("extend", "workflow_run_usage.json"), "usage": {"totalCredits": 7.5}}
    with pytest.raises(FlowRunsResponseError, match="usage.credits"):
        platform("extend").parse_run(body)


def test_extend_start_tags_the_run_with_its_dag_and_task_after_the_users_tags(tmp_path: Path) -> None:
    """``metadata["extend:usage_tags"]``: tags keep only letters, digits, ``-`` and ``_`` (Extend removes any other
    character), so the ids are written with hyphens and no tag changes on the way in."""
    (pdf,) = documents(tmp_path, "invoice.pdf")
    api = Recorder({"upload file": {"id": "file_1"}, "start run": golden("extend", "workflow_run_usage.json")})
    request = StartRequest(
        flow_id="workflow_1",
        files={"file": pdf},
        metadata={"extend:usage_tags": ["team-finance", "airflow-task-extract"]},
        task_key="af-1",
        started_by=StartedBy("invoices.daily v2", "extract"),
    )
    platform("extend").start_run(api, request)
    assert api.calls[-1].json["metadata"] == {
        "extend:usage_tags": ["team-finance", "airflow-task-extract", "airflow-dag-invoices-daily-v2"],
        "airflow_task_key": "af-1",
    }


@pytest.mark.parametrize("tags", ["team-finance", ["team", 7], {"team": "finance"}])
def test_extend_usage_tags_that_are_not_a_list_of_strings_are_refused_before_any_upload(
    tmp_path: Path, tags: Any
) -> None:
    (pdf,) = documents(tmp_path, "invoice.pdf")
    api = Recorder({})
    request = StartRequest(flow_id="workflow_1", files={"file": pdf}, metadata={"extend:usage_tags": tags})
    with pytest.raises(FlowRunsConfigError, match="must be a list of strings"):
        platform("extend").start_run(api, request)
    assert api.calls == []


def test_extend_start_without_a_task_sends_no_tags(tmp_path: Path) -> None:
    (pdf,) = documents(tmp_path, "invoice.pdf")
    api = Recorder({"upload file": {"id": "file_1"}, "start run": golden("extend", "workflow_run_usage.json")})
    platform("extend").start_run(api, StartRequest(flow_id="workflow_1", files={"file": pdf}, task_key="af-1"))
    assert api.calls[-1].json["metadata"] == {"airflow_task_key": "af-1"}


def test_extend_batch_start_tags_every_input_with_the_dag_and_task(tmp_path: Path) -> None:
    paths = documents(tmp_path, "a.pdf", "b.pdf")
    api = Recorder({"upload file": {"id": "file_1"}, "start batch": golden("extend", "batch_created.json")})
    batch = [BatchDocument(f"af-k.{i:016x}", path.name, path=path) for i, path in enumerate(paths)]
    started_by = StartedBy("archive", "backfill/2024")
    platform("extend").start_batch(api, "workflow_1", batch, None, {"owner": "ap"}, started_by)
    inputs = api.calls[-1].json["inputs"]
    assert [item["metadata"]["extend:usage_tags"] for item in inputs] == [
        ["airflow-dag-archive", "airflow-task-backfill-2024"]
    ] * 2
    assert all(item["metadata"]["owner"] == "ap" for item in inputs)
