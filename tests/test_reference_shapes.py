"""Emulator answers no SDK models have exactly the fields of the vendors' reference pages.

TableFlow and StackAI publish no SDK, and Noxus's SDK does not model its workspace listing: the golden
payloads transcribed from their pages (``tests/golden/``) are the reference, and the emulator may send no
field they lack and lack none they have.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from airflow_flowruns.platforms.noxus.emulator import NOXUS_DOCUMENT_WORKFLOW
from airflow_flowruns.platforms.stackai.emulator import STACKAI_FLOW, STACKAI_ORG
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_SMALL_FILE_FLOW
from support.emulator import API_KEY, Emulator
from support.golden import golden
from test_sdk_models import injected


def fields(platform: str, name: str) -> set[str]:
    body = golden(platform, name)
    return set((body[0] if isinstance(body, list) else body).keys())


def test_tableflow_runs_have_the_reference_pages_fields(emulator: Emulator, pdf: Path) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=f"{emulator.url}/v2", headers=auth, timeout=10) as http:
        files = {"document": ("doc.pdf", pdf.read_bytes(), "application/pdf")}
        started = http.post(f"/flows/{TABLEFLOW_SMALL_FILE_FLOW}/run", files=files).json()
        listed: list[dict[str, Any]] = http.get(f"/flows/{TABLEFLOW_SMALL_FILE_FLOW}/runs").json()
        read = http.get(f"/flows/runs/{started['id']}").json()
    assert set(started) == fields("tableflow", "run_started.json")
    assert isinstance(listed, list) and [set(item) for item in listed] == [fields("tableflow", "flow_runs.json")]
    assert set(read) == fields("tableflow", "run_started.json") | {"flow"}, "a read embeds the flow summary"
    assert all(isinstance(started[key], int) for key in ("created_at", "updated_at", "start_time"))


def test_tableflow_workspace_listing_pages_whole_runs(emulator: Emulator, pdf: Path) -> None:
    """``GET /v2/flows/runs`` (api-notes §1; no reference page): each item is the run object the reference
    pages show, the very one the per-flow listing holds, in the ``{flow_runs, pagination}`` envelope."""
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=f"{emulator.url}/v2", headers=auth, timeout=10) as http:
        for _ in range(3):
            files = {"document": ("doc.pdf", pdf.read_bytes(), "application/pdf")}
            http.post(f"/flows/{TABLEFLOW_SMALL_FILE_FLOW}/run", files=files).raise_for_status()
        first = http.get("/flows/runs", params={"limit": 2}).json()
        second = http.get("/flows/runs", params={"limit": 2, "offset": first["pagination"]["next_offset"]}).json()
        per_flow = http.get(f"/flows/{TABLEFLOW_SMALL_FILE_FLOW}/runs").json()
    assert set(first) == set(second) == {"flow_runs", "pagination"}
    assert first["pagination"] == {"total": 3, "limit": 2, "offset": 0, "next_offset": 2}
    assert second["pagination"] == {"total": 3, "limit": 2, "offset": 2, "next_offset": None}
    items = first["flow_runs"] + second["flow_runs"]
    assert [set(item) for item in items] == [fields("tableflow", "run_started.json")] * 3
    assert sorted(items, key=lambda r: r["id"]) == sorted(per_flow, key=lambda r: r["id"])


def test_tableflow_errors_are_the_documented_body(emulator: Emulator) -> None:
    """``{"error", "message"}`` on every status (api-notes §1), the emulator's own injected faults included."""
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=f"{emulator.url}/v2", headers=auth, timeout=10) as http:
        answers = [
            http.get("/flows", headers={"Authorization": "Bearer wrong"}),
            http.get("/flows/runs/missing"),
            http.post(f"/flows/{TABLEFLOW_SMALL_FILE_FLOW}/run", data={"name": "no file"}),
            http.get("/flows/runs", params={"limit": 0}),
            *injected(emulator, http, "/v2/flows"),
        ]
    assert [r.status_code for r in answers] == [401, 404, 422, 422, 429, 500, 503]
    assert all(set(r.json()) == {"error", "message"} for r in answers), [r.json() for r in answers]


def test_stackai_listing_items_have_the_reference_pages_fields(emulator: Emulator) -> None:
    """Listing items and the metadata read of one run: the page's fields, and null where the page lists an
    enum without its values (``run_type``, ``ran_by_type``): any value would be made up."""
    with httpx.Client(base_url=emulator.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10) as http:
        ran = http.post(f"/inference/v0/run/{STACKAI_ORG}/{STACKAI_FLOW}", json={"in-0": "hello", "user_id": "u1"})
        items = http.get(f"/analytics/org/{STACKAI_ORG}/flows/{STACKAI_FLOW}").json()
        metadata = http.get(
            f"/inference/v0/run/{STACKAI_ORG}/{STACKAI_FLOW}/metadata", params={"run_id": ran.json()["run_id"]}
        ).json()
    assert items and all(set(item) == fields("stackai", "flow_runs.json") for item in items)
    assert metadata == items[0]
    assert all(item["run_type"] is None and item["ran_by_type"] is None for item in items)


def test_noxus_workspace_listing_items_have_the_reference_pages_fields(emulator: Emulator, pdf: Path) -> None:
    """``GET /v1/runs`` (no SDK model): items as its reference page shows them, embedded workflow included."""
    with httpx.Client(base_url=emulator.url, headers={"X-API-Key": API_KEY}, timeout=10) as http:
        upload = http.post("/v1/file", files={"file": ("doc.pdf", pdf.read_bytes(), "application/pdf")}).json()
        body = {"input": {"document": {"uri": upload["uri"], "name": "doc.pdf"}, "instructions": "Summarize"}}
        http.post(f"/v1/workflows/{NOXUS_DOCUMENT_WORKFLOW}/runs", json=body).raise_for_status()
        page = http.get("/v1/runs", params={"page": 1, "size": 10}).json()
    reference = golden("noxus", "runs_page.json")
    assert set(page) == set(reference)
    (item,) = page["items"]
    assert set(item) == set(reference["items"][0])
    assert set(item["workflow"]) == set(reference["items"][0]["workflow"])
