"""Extend's batch start (``POST /workflow_runs/batch``): the I/O-free calls and answers on the golden payloads,
then over HTTP against the emulator, then the emulator's answers against the official SDK's models."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_flowruns.client import FlowRunsClient
from airflow_flowruns.client.listing import PageWalk
from airflow_flowruns.exceptions import FlowRunsConfigError, FlowRunsResponseError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms.base import ApiCall, ConnectionSettings, FlowRun
from airflow_flowruns.platforms.extend.api import Extend
from airflow_flowruns.platforms.extend.batch import (
    MAX_INPUTS_PER_CALL,
    BatchInput,
    BatchRunsListing,
    StartedBatch,
    batch_calls,
    batch_id_of,
    document_key_of,
    parse_batch_created,
)
from airflow_flowruns.platforms.extend.emulator import EXTEND_INVOICE_WORKFLOW
from airflow_flowruns.platforms.start import TASK_KEY_FIELD, UploadFile
from support.emulator import API_KEY, Emulator, set_connection
from support.golden import golden
from test_sdk_models import EXTEND, injected, problems
from test_vendor_sdks import run_sdk

TASK_KEY = "af-0123456789abcdef01234567"
GOLDEN_BATCH = "batch_7Ws31-F5"
LIST_RESPONSE = "extend_ai.workflow_runs.types:WorkflowRunsListResponse"
BIG = {"x": "y" * 10240}
"""Run metadata over Extend's 10 KB."""
HEADERS = {"Authorization": f"Bearer {API_KEY}", "x-extend-api-version": "2026-02-09"}


def extend() -> Extend:
    return Extend(ConnectionSettings("c", "key", Extend.default_base_url))


def golden_inputs() -> list[BatchInput]:
    """The two documents of ``batch_request.json``."""
    return [
        BatchInput("invoice-1", file_id="file_xK9mLPqRtN3vS8wF5hB2cQ", metadata={"customerId": "cust_abc123"}),
        BatchInput(
            "invoice-2",
            url="https://example.com/invoice2.pdf",
            name="invoice2.pdf",
            metadata={"customerId": "cust_def456"},
        ),
    ]


def url_inputs(count: int, prefix: str = "doc") -> list[BatchInput]:
    return [BatchInput(f"{prefix}-{i}", url=f"https://example.com/{prefix}-{i}.pdf") for i in range(count)]


# --- the I/O-free layer, on the golden payloads ------------------------------------------------------------------


def test_the_batch_call_is_the_sdks_request() -> None:
    (call,) = batch_calls("wf_1234567890", golden_inputs(), TASK_KEY, version="3")
    assert (call.method, call.path, call.idempotent) == ("POST", "/workflow_runs/batch", False)
    assert call.json == golden("extend", "batch_request.json")


@pytest.mark.parametrize(
    ("documents", "per_call"),
    [(1, [1]), (MAX_INPUTS_PER_CALL, [1000]), (MAX_INPUTS_PER_CALL + 1, [1000, 1]), (2500, [1000, 1000, 500])],
)
def test_documents_are_chunked_at_the_sdks_maximum_per_call(documents: int, per_call: list[int]) -> None:
    calls = batch_calls("wf_1", url_inputs(documents), TASK_KEY)
    assert [len(call.json["inputs"]) for call in calls] == per_call
    sent = [item["metadata"]["airflow_document_key"] for call in calls for item in call.json["inputs"]]
    assert sent == [f"doc-{i}" for i in range(documents)], "every document once, in order"
    assert all(call.json["workflow"] == {"id": "wf_1"} and not call.idempotent for call in calls)


@pytest.mark.parametrize(
    ("build", "complaint"),
    [
        (lambda: batch_calls("wf_1", [], TASK_KEY), "at least one document"),
        (lambda: batch_calls("", url_inputs(1), TASK_KEY), "workflow id"),
        (lambda: batch_calls("wf_1", url_inputs(2) + url_inputs(1), TASK_KEY), "'doc-0' appear more than once"),
        (lambda: BatchInput("d"), "not neither"),
        (lambda: BatchInput("d", file_id="file_1", url="https://example.com/d.pdf"), "not both"),
        (lambda: BatchInput("d", file_id="file_1", name="d.pdf"), "only with a URL"),
        (lambda: BatchInput("", file_id="file_1"), "non-empty document key"),
        (
            lambda: batch_calls("wf_1", [*url_inputs(3), BatchInput("big", file_id="f", metadata=BIG)], "k"),
            "document 'big' is 10",
        ),
    ],
)
def test_a_bad_batch_is_refused_before_any_call_is_built(build: Any, complaint: str) -> None:
    with pytest.raises(FlowRunsConfigError, match=complaint):
        build()


def test_the_answer_names_the_batch_and_the_documents_its_call_carried() -> None:
    (call,) = batch_calls("wf_1234567890", golden_inputs(), TASK_KEY)
    started = parse_batch_created(extend(), golden("extend", "batch_created.json"), call)
    assert started == StartedBatch(GOLDEN_BATCH, ("invoice-1", "invoice-2"))


@pytest.mark.parametrize("body", [{}, {"batchId": ""}, {"batchId": None}, [], "accepted"])
def test_an_answer_without_a_batch_id_is_the_providers_error(body: Any) -> None:
    (call,) = batch_calls("wf_1", url_inputs(1), TASK_KEY)
    with pytest.raises(FlowRunsResponseError, match="batch start answer"):
        parse_batch_created(extend(), body, call)


def test_the_listing_filters_on_the_batch_and_pages_with_the_same_filter() -> None:
    listing = BatchRunsListing(extend(), GOLDEN_BATCH)
    first = listing.first_call()
    params = {"batchId": GOLDEN_BATCH, "sortBy": "createdAt", "sortDir": "asc", "maxPageSize": 1000}
    assert (first.method, first.path, first.params) == ("GET", "/workflow_runs", params)
    page = listing.parse_page(golden("extend", "batch_runs_page.json"), first)
    assert [(run.id, run.status, batch_id_of(run)) for run in page.runs] == [
        ("workflow_run_batcha00000000000000", "PROCESSED", GOLDEN_BATCH),
        ("workflow_run_batchb00000000000000", "PENDING", GOLDEN_BATCH),
    ]
    assert page.next_call is not None and page.next_call.params == {
        **params,
        "nextPageToken": "xK9mLPqRtN3vS8wF5hB2cQ==:zWvUxYjM4nKpL7aDgE9HbTcR2mAyX3/Q+CNkfBSw1dZ=",
    }


def test_a_page_listing_runs_of_no_batch_is_refused() -> None:
    """``runs_page.json`` is what a listing that ignored the filter would answer: runs with ``batchId`` null."""
    listing = BatchRunsListing(extend(), GOLDEN_BATCH)
    with pytest.raises(FlowRunsResponseError, match="did not apply the batchId filter"):
        listing.parse_page(golden("extend", "runs_page.json"), listing.first_call())


def test_a_run_outside_any_batch_has_no_batch_id() -> None:
    run = extend().parse_run(golden("extend", "workflow_run_failed.json"))
    assert batch_id_of(run) is None and document_key_of(run) is None


# --- over HTTP, against the emulator ------------------------------------------------------------------------------


@pytest.fixture
def client(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[FlowRunsClient]:
    hook = FlowRunsHook(set_connection(monkeypatch, "extend_test", "extend", emulator.url))
    yield hook.client
    hook.client.close()


def start(client: FlowRunsClient, inputs: list[BatchInput]) -> list[StartedBatch]:
    assert isinstance(client.platform, Extend)
    calls = batch_calls(EXTEND_INVOICE_WORKFLOW, inputs, TASK_KEY)
    return [parse_batch_created(client.platform, client.call(call), call) for call in calls]


def batch_runs(client: FlowRunsClient, batch_id: str, page_size: int | None = None) -> list[FlowRun]:
    assert isinstance(client.platform, Extend)
    listing = BatchRunsListing(client.platform, batch_id)
    first = listing.first_call()
    if page_size is not None:
        first = replace(first, params={**(first.params or {}), "maxPageSize": page_size})
    return [
        run for page in client.walk_pages(PageWalk(client.platform, first, listing.parse_page)) for run in page.runs
    ]


def upload(client: FlowRunsClient, pdf: Path) -> str:
    answer = client.call(
        ApiCall("upload file", "POST", "/files/upload", files=[UploadFile("file", pdf, "application/pdf")])
    )
    return str(answer["id"])


def test_a_batch_starts_one_run_per_document_found_again_by_its_batch_id(
    client: FlowRunsClient, emulator: Emulator, pdf: Path
) -> None:
    single = client.call(
        ApiCall(
            "start run",
            "POST",
            "/workflow_runs",
            json={"workflow": {"id": EXTEND_INVOICE_WORKFLOW}, "file": {"url": "https://example.com/x.pdf"}},
        )
    )
    (other,) = start(client, url_inputs(2, "other"))
    inputs = [BatchInput("uploaded", file_id=upload(client, pdf)), *url_inputs(4)]
    (started,) = start(client, inputs)
    assert started.document_keys == ("uploaded", "doc-0", "doc-1", "doc-2", "doc-3")
    runs = {run["id"]: run for run in emulator.runs() if run.get("batchId") == started.batch_id}
    assert len(runs) == 5 and other.batch_id != started.batch_id
    listed = batch_runs(client, started.batch_id, page_size=2)
    assert sorted(run.id for run in listed) == sorted(runs) and single["id"] not in runs
    assert {batch_id_of(run) for run in listed} == {started.batch_id}
    full = [client.get_run(None, run.id) for run in listed]
    assert sorted(document_key_of(run) or "" for run in full) == sorted(started.document_keys)
    assert {run.metadata[TASK_KEY_FIELD] for run in full} == {TASK_KEY}
    assert {batch_id_of(run) for run in full} == {started.batch_id}


def test_a_batchs_runs_move_on_to_completed_with_time(client: FlowRunsClient, emulator: Emulator) -> None:
    # Long enough queued that the first listing sees it on a loaded machine, short enough to wait out.
    emulator.scenario(EXTEND_INVOICE_WORKFLOW, "extend", queued_seconds=3, processing_seconds=0.3)
    (started,) = start(client, url_inputs(3))
    assert {run.status for run in batch_runs(client, started.batch_id)} == {"PENDING"}
    deadline = time.monotonic() + 10
    listed = batch_runs(client, started.batch_id)
    while {run.status for run in listed} != {"PROCESSED"}:
        assert time.monotonic() < deadline, [run.status for run in listed]
        time.sleep(0.05)
        listed = batch_runs(client, started.batch_id)
    assert len(listed) == 3 and all(run.ended_at is not None for run in listed)


def test_more_documents_than_one_call_takes_start_one_batch_per_call(client: FlowRunsClient) -> None:
    batches = start(client, url_inputs(MAX_INPUTS_PER_CALL + 1))
    assert [len(batch.document_keys) for batch in batches] == [MAX_INPUTS_PER_CALL, 1]
    assert [len(batch_runs(client, batch.batch_id)) for batch in batches] == [MAX_INPUTS_PER_CALL, 1]


def uploaded(http: httpx.Client, pdf: Path) -> str:
    answer = http.post("/files/upload", files={"file": ("doc.pdf", pdf.read_bytes(), "application/pdf")})
    return str(answer.json()["id"])


def refused_batches(http: httpx.Client, file_id: str) -> list[httpx.Response]:
    """Batches the SDK would not send (or Extend refuses), one per rule, each otherwise valid."""
    workflow = {"id": EXTEND_INVOICE_WORKFLOW}
    one = [{"file": {"url": "https://example.com/a.pdf"}}]
    bodies: list[Any] = [
        {"workflow": workflow, "inputs": []},
        {"workflow": workflow, "inputs": one * 1001},
        {"workflow": {"id": "workflow_missing"}, "inputs": one},
        {"workflow": workflow},
        {"inputs": one},
        {"workflow": workflow, "inputs": [*one, {"metadata": {"k": "v"}}]},
        {"workflow": workflow, "inputs": [*one, {"package": {"files": [{"id": file_id}, {"id": file_id}]}}]},
        {"workflow": workflow, "inputs": [*one, {"file": {"id": file_id, "url": "https://example.com/b.pdf"}}]},
        {"workflow": workflow, "inputs": [*one, {"file": {"id": "file_missing"}}]},
        {"workflow": workflow, "inputs": [*one, {"file": {"id": file_id}, "outputs": []}]},
        {"workflow": workflow, "inputs": [*one, {"file": {"id": file_id}, "metadata": {"x": "y" * 10240}}]},
        {"workflow": workflow, "inputs": one, "priority": 0},
        {"workflow": workflow, "inputs": one, "priority": "high"},
    ]
    return [http.post("/workflow_runs/batch", json=body) for body in bodies]


def test_the_emulator_refuses_what_the_sdk_would_not_send_and_starts_nothing(emulator: Emulator, pdf: Path) -> None:
    with httpx.Client(base_url=emulator.url, headers=HEADERS, timeout=10) as http:
        file_id = uploaded(http, pdf)
        refused = refused_batches(http, file_id)
        unauthorized = http.post("/workflow_runs/batch", json={}, headers={"Authorization": "Bearer wrong"})
    assert [r.status_code for r in refused] == [400, 400, 404, 400, 400, 400, 400, 400, 404, 400, 400, 400, 400]
    assert {r.json()["code"] for r in refused} == {"INVALID_REQUEST", "NOT_FOUND"}
    assert all(r.json()["retryable"] is False and r.json()["message"] for r in refused)
    assert (unauthorized.status_code, unauthorized.json()["code"]) == (401, "UNAUTHORIZED")
    assert emulator.runs() == []


# --- the emulator against the official SDK ------------------------------------------------------------------------


@pytest.mark.integration
def test_every_batch_answer_and_request_has_exactly_the_sdk_models_fields(emulator: Emulator, pdf: Path) -> None:
    answers: list[tuple[str, str, Any]] = []
    request = golden("extend", "batch_request.json")
    answers.append(("golden request workflow", f"{EXTEND}:WorkflowReference", request["workflow"]))
    item_model = "extend_ai.workflow_runs.types:WorkflowRunsCreateBatchRequestInputsItem"
    answers += [(f"golden request input {i}", item_model, item) for i, item in enumerate(request["inputs"])]
    created_model = "extend_ai.workflow_runs.types:WorkflowRunsCreateBatchResponse"
    answers.append(("golden answer", created_model, golden("extend", "batch_created.json")))
    answers.append(("golden batch page", LIST_RESPONSE, golden("extend", "batch_runs_page.json")))
    with httpx.Client(base_url=emulator.url, headers=HEADERS, timeout=10) as http:
        file_id = uploaded(http, pdf)
        body = {
            "workflow": {"id": EXTEND_INVOICE_WORKFLOW},
            "inputs": [{"file": {"id": file_id}, "metadata": {"k": "v"}}],
        }
        created = http.post("/workflow_runs/batch", json=body).json()
        answers.append(("batch created", created_model, created))
        page = http.get("/workflow_runs", params={"batchId": created["batchId"]}).json()
        answers.append(("batch listing", LIST_RESPONSE, page))
        run = http.get(f"/workflow_runs/{page['data'][0]['id']}").json()
        answers.append(("batch run", f"{EXTEND}:WorkflowRun", run))
        errors = [*refused_batches(http, file_id), *injected(emulator, http, "/workflow_runs/batch")]
        answers += [(f"error {r.status_code} #{i}", f"{EXTEND}:ApiError", r.json()) for i, r in enumerate(errors)]
    assert set(created) == {"batchId"} and run["batchId"] == created["batchId"] == page["data"][0]["batchId"]
    assert run["metadata"] == {"k": "v"}
    assert problems(answers) == {}


@pytest.mark.integration
def test_the_extend_sdk_starts_a_batch_on_the_emulator_and_lists_its_runs(emulator: Emulator, pdf: Path) -> None:
    seen = run_sdk("extend_batch_client.py", emulator, EXTEND_INVOICE_WORKFLOW, pdf)
    runs = emulator.runs()
    assert seen["types"] == ["WorkflowRunsCreateBatchResponse", "WorkflowRunsListResponse"]
    assert {run["batchId"] for run in runs} == {seen["batch_id"]} and len(runs) == 3
    assert sorted(run_id for run_id, _, _ in seen["listed"]) == sorted(run["id"] for run in runs)
    assert {batch_id for _, batch_id, _ in seen["listed"]} == {seen["batch_id"]}
    assert sorted(name for _, _, names in seen["listed"] for name in names) == ["doc.pdf", "invoice1.pdf", "named.pdf"]
    assert sorted(run["metadata"].get("document", "") for run in runs) == ["", "by-id", "by-url"]
