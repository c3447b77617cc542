"""Listing runs: lazy paging with exactly one request per page, and filters at the window's edges."""

from __future__ import annotations

import asyncio
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms.base import RunState
from airflow_flowruns.platforms.extend.emulator import EXTEND_INVOICE_WORKFLOW
from airflow_flowruns.platforms.noxus.emulator import NOXUS_DOCUMENT_WORKFLOW
from airflow_flowruns.platforms.stackai.emulator import STACKAI_FLOW, STACKAI_ORG
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_REVIEW_FLOW
from support.emulator import Emulator, set_connection
from support.runs import RECONCILIATION_FLOW

DAY = datetime(2026, 3, 1, tzinfo=UTC)


def seed(
    emulator: Emulator,
    count: int,
    flow_id: str = RECONCILIATION_FLOW,
    start: datetime = DAY,
    hours: float = 24,
    **scenario: object,
) -> list[str]:
    body = {
        "platform": "tableflow",
        "flow_id": flow_id,
        "count": count,
        "created_from": start.timestamp(),
        "created_to": (start + timedelta(hours=hours)).timestamp(),
        "scenario": {"processing_seconds": 0, **scenario},
    }
    return emulator.control.post("/seed", json=body).json()["ids"]


def list_requests(emulator: Emulator) -> list[dict[str, Any]]:
    return [r for r in emulator.requests() if r["path"] == "/v2/flows/runs"]


@pytest.mark.parametrize(("count", "pages"), [(0, 1), (1, 1), (100, 1), (101, 2), (250, 3)])
def test_every_run_once_and_one_request_per_page(
    tableflow_conn: str, emulator: Emulator, count: int, pages: int
) -> None:
    ids = seed(emulator, count)
    listed = [run.id for run in FlowRunsHook(tableflow_conn).list_runs(page_size=100)]
    assert sorted(listed) == sorted(ids)
    assert listed == ids[::-1], "newest first"
    assert len(list_requests(emulator)) == pages


def test_listing_is_lazy(tableflow_conn: str, emulator: Emulator) -> None:
    seed(emulator, 300)
    runs = FlowRunsHook(tableflow_conn).list_runs(page_size=100)
    assert emulator.requests() == []
    next(runs)
    assert len(list_requests(emulator)) == 1


def test_window_start_is_in_and_end_is_out(tableflow_conn: str, emulator: Emulator) -> None:
    ids = seed(emulator, 48, start=DAY - timedelta(hours=24), hours=48)  # one run per hour over two days
    listed = list(FlowRunsHook(tableflow_conn).list_runs(created_after=DAY, created_before=DAY + timedelta(hours=12)))
    assert [run.created_at for run in listed][-1] == DAY
    assert all(run.created_at and DAY <= run.created_at < DAY + timedelta(hours=12) for run in listed)
    assert {run.id for run in listed} == set(ids[24:36])


def test_paging_stops_once_past_the_window(tableflow_conn: str, emulator: Emulator) -> None:
    seed(emulator, 500, start=DAY - timedelta(days=10), hours=24 * 10)
    listed = list(FlowRunsHook(tableflow_conn).list_runs(created_after=DAY - timedelta(days=1), page_size=50))
    assert len(listed) == 50
    assert len(list_requests(emulator)) == 2, "the second page reaches past the window's start"


def test_filters_by_flow_and_state(tableflow_conn: str, emulator: Emulator) -> None:
    done = seed(emulator, 5)
    review = seed(emulator, 3, flow_id=TABLEFLOW_REVIEW_FLOW, review=True)
    hook = FlowRunsHook(tableflow_conn)
    assert {r.id for r in hook.list_runs(flow_id=TABLEFLOW_REVIEW_FLOW)} == set(review)
    assert {r.id for r in hook.list_runs(states=["succeeded"])} == set(done)
    assert {r.id for r in hook.list_runs(states=[RunState.NEEDS_REVIEW, RunState.SUCCEEDED])} == set(done + review)
    assert "status=completed" in list_requests(emulator)[1]["query"], "one state is filtered by the API"


def test_async_twin_lists_the_same(tableflow_conn: str, emulator: Emulator) -> None:
    ids = seed(emulator, 120)

    async def listed() -> list[str]:
        return [run.id async for run in FlowRunsHook(tableflow_conn).alist_runs(page_size=50)]

    assert asyncio.run(listed()) == ids[::-1]
    assert len(list_requests(emulator)) == 3


def test_unknown_state_is_refused(tableflow_conn: str) -> None:
    with pytest.raises(FlowRunsConfigError, match="'done' is not a valid RunState"):
        list(FlowRunsHook(tableflow_conn).list_runs(states=["done"]))


SCALE_FLOWS = {
    "tableflow": (RECONCILIATION_FLOW, {}),
    "extend": (EXTEND_INVOICE_WORKFLOW, {}),
    "noxus": (NOXUS_DOCUMENT_WORKFLOW, {}),
    "stackai": (STACKAI_FLOW, {"org_id": STACKAI_ORG}),
}


@pytest.mark.integration
@pytest.mark.parametrize("platform", SCALE_FLOWS)
def test_ten_thousand_runs_page_by_page_in_flat_memory(
    platform: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paging at scale: every run once, one request per page, and only a page held at a time."""
    flow_id, extra = SCALE_FLOWS[platform]
    conn_id = set_connection(monkeypatch, f"scale_{platform}", platform, emulator.url, **extra)
    body = {"platform": platform, "flow_id": flow_id, "count": 10_000, "scenario": {"processing_seconds": 0}}
    seeded = set(emulator.control.post("/seed", json=body, timeout=120).json()["ids"])
    emulator.clear_requests()
    seen: set[str] = set()
    held: list[int] = []  # memory traced after each 1,000 runs (between pages: the emulator is idle then)
    tracemalloc.start()
    try:
        for run in FlowRunsHook(conn_id).list_runs(flow_id=flow_id, page_size=100):
            assert run.id not in seen
            seen.add(run.id)
            if len(seen) % 1000 == 0:
                held.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert seen == seeded
    # StackAI's listing has no total: only a short (here empty) page ends it.
    assert len(emulator.requests()) == (101 if platform == "stackai" else 100)
    growth = max(held) - held[0]  # the ids seen (under 1 MiB) and the request log; never the runs themselves
    assert growth < 4 * 2**20, f"{growth / 2**20:.1f} MiB more held after 10,000 runs than after 1,000"
