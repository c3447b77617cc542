"""Retries re-run failures, never live runs (Airflow 3.3's ``ResumableJobMixin`` convention), on every
platform that runs asynchronously: TableFlow and Extend find an earlier run by its task key or the task's
state store; Noxus, which keeps no metadata, through the state store only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pytest
from airflow.providers.common.compat.sdk import Context
from airflow.sdk.execution_time.context import TaskStateStoreAccessor
from pydantic import JsonValue
from pytest_mock import MockerFixture

from airflow_flowruns import starting
from airflow_flowruns.operators._reattach import STATE_STORE_KEY
from airflow_flowruns.operators.flow_run import PREVIOUS_RUN_ID_KEY, FlowRunOperator
from airflow_flowruns.platforms.extend.emulator import EXTEND_INVOICE_WORKFLOW
from airflow_flowruns.platforms.noxus.emulator import NOXUS_DOCUMENT_WORKFLOW
from support.emulator import Emulator, pushed, set_connection, task_instance
from support.runs import RECONCILIATION_FLOW


class StateStore(TaskStateStoreAccessor):
    """The task's state store as Airflow 3.3 hands it to a task (per task instance, kept across tries), in memory
    rather than behind the worker's supervisor."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: JsonValue = None) -> JsonValue:
        return self.values.get(key, default)

    def set(self, key: str, value: JsonValue, *, retention: timedelta | None = None) -> None:
        self.values[key] = value


@dataclass(frozen=True)
class Case:
    platform: str
    flow_id: str
    file_key: str
    live: str
    failed: str
    succeeded: str
    review: str
    cancelled: str | None
    by_task_key: bool
    """Finds an earlier run without a state store (the platform keeps the task key on the run)."""
    inputs: dict[str, Any] | None = None
    rejected: str | None = None
    """The status of a run a reviewer rejected, where the platform has review."""


CASES = {
    "tableflow": Case("tableflow", RECONCILIATION_FLOW, "", "processing", "failed", "completed", "review", None, True),
    "extend": Case(
        "extend",
        EXTEND_INVOICE_WORKFLOW,
        "file",
        "PROCESSING",
        "FAILED",
        "PROCESSED",
        "NEEDS_REVIEW",
        "CANCELLED",
        True,
        rejected="REJECTED",
    ),
    "noxus": Case(
        "noxus",
        NOXUS_DOCUMENT_WORKFLOW,
        "document",
        "running",
        "failed",
        "completed",
        "awaiting_human_feedback",
        "stopped",
        False,
        {"instructions": "Summarize"},
    ),
}


def operator(case: Case, conn_id: str, pdfs: dict[str, Path], **kwargs: Any) -> FlowRunOperator:
    files: dict[str, Any] = (
        {"purchase_order": pdfs["po"], "invoice": pdfs["inv"]}
        if case.platform == "tableflow"
        else {case.file_key: pdfs["a"]}
    )
    return FlowRunOperator(
        task_id="extract",
        flowruns_conn_id=conn_id,
        flow_id=case.flow_id,
        files=files,
        inputs=case.inputs,
        wait_for_completion=False,
        **kwargs,
    )


def context(ti: MagicMock, store: StateStore | None) -> Context:
    return Context(ti=ti, task_state_store=store) if store is not None else Context(ti=ti)


def task_try(mocker: MockerFixture, try_number: int) -> MagicMock:
    """The task instance of one try of the task the cases run."""
    return task_instance(mocker, try_number, dag_id="docs", task_id="extract", run_id="manual__1")


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


@pytest.fixture
def conn(case: Case, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> str:
    return set_connection(monkeypatch, f"{case.platform}_retries", case.platform, emulator.url)


@pytest.mark.parametrize("store", [True, False], ids=["state store", "no state store"])
@pytest.mark.parametrize("earlier", ["live", "review", "succeeded"])
def test_a_retry_follows_a_live_or_succeeded_run(
    earlier: str, store: bool, case: Case, conn: str, emulator: Emulator, pdfs: dict[str, Path], mocker: MockerFixture
) -> None:
    if not store and not case.by_task_key:
        pytest.skip("without a state store Noxus has nothing to find a run by (README: Never a second run)")
    tasks = StateStore() if store else None
    first = operator(case, conn, pdfs).execute(context(task_try(mocker, 1), tasks))
    emulator.set_status(first["id"], getattr(case, earlier))
    retry = task_try(mocker, 2)
    second = operator(case, conn, pdfs).execute(context(retry, tasks))
    assert second["id"] == first["id"]
    assert [run["id"] for run in emulator.runs()] == [first["id"]], "no second run while the first is alive"
    assert PREVIOUS_RUN_ID_KEY not in pushed(retry)


@pytest.mark.parametrize("store", [True, False], ids=["state store", "no state store"])
@pytest.mark.parametrize("ending", ["failed", "cancelled", "rejected"])
def test_a_retry_after_a_failed_rejected_or_cancelled_run_starts_a_fresh_one(
    ending: str,
    store: bool,
    case: Case,
    conn: str,
    emulator: Emulator,
    pdfs: dict[str, Path],
    mocker: MockerFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = getattr(case, ending)
    if not store and not case.by_task_key:
        pytest.skip("without a state store Noxus has nothing to find a run by (README: Never a second run)")
    if status is None:
        pytest.skip(f"{case.platform} runs cannot be {ending}")
    tasks = StateStore() if store else None
    first = operator(case, conn, pdfs).execute(context(task_try(mocker, 1), tasks))
    emulator.set_status(first["id"], status, error="unreadable scan" if ending == "failed" else None)
    retry = task_try(mocker, 2)
    second = operator(case, conn, pdfs).execute(context(retry, tasks))
    assert second["id"] != first["id"]
    assert sorted(run["id"] for run in emulator.runs()) == sorted([first["id"], second["id"]])
    assert pushed(retry)[PREVIOUS_RUN_ID_KEY] == [first["id"]], "XCom names the run this one replaces"
    assert f"earlier {case.platform} run {first['id']} of this task ended {status}" in capsys.readouterr().out
    if tasks is not None:
        assert tasks.values[STATE_STORE_KEY]["id"] == second["id"], "the store now names the fresh run"
    third = operator(case, conn, pdfs).execute(context(task_try(mocker, 3), tasks))
    assert third["id"] == second["id"], "a third try follows the fresh run, still alive"


@pytest.mark.parametrize("case", sorted(name for name, case in CASES.items() if case.by_task_key), indirect=True)
@pytest.mark.parametrize("unsaved_run", ["alive", "failed"])
def test_a_fresh_run_whose_save_a_dead_worker_missed_is_found_by_task_key(
    unsaved_run: str, case: Case, conn: str, emulator: Emulator, pdfs: dict[str, Path], mocker: MockerFixture
) -> None:
    """The worker died after a retry's fresh start returned and before its save: the store still names the
    failed run before it, with the note that a start was under way. The next try looks for a newer run by
    task key before deciding, so it follows the fresh run while it is alive (no third run), and names it as
    the earlier run when it failed too. (Noxus keeps no task key: docs/guides/runs.md, What remains
    uncovered.)"""
    tasks = StateStore()
    first = operator(case, conn, pdfs).execute(context(task_try(mocker, 1), tasks))
    emulator.set_status(first["id"], case.failed, error="unreadable scan")
    crash = mocker.patch.object(starting, "save_run", side_effect=SystemExit("worker killed"))
    with pytest.raises(SystemExit):
        operator(case, conn, pdfs).execute(context(task_try(mocker, 2), tasks))
    mocker.stop(crash)
    (unsaved,) = (run["id"] for run in emulator.runs() if run["id"] != first["id"])
    assert tasks.values[STATE_STORE_KEY] == {"id": first["id"], "flow_id": case.flow_id, "starting": True}
    if unsaved_run == "failed":
        emulator.set_status(unsaved, case.failed, error="unreadable scan")
    retry = task_try(mocker, 3)
    third = operator(case, conn, pdfs).execute(context(retry, tasks))
    runs = [run["id"] for run in emulator.runs()]
    if unsaved_run == "alive":
        assert third["id"] == unsaved and len(runs) == 2, f"no third run while {unsaved} is alive: {runs}"
        assert PREVIOUS_RUN_ID_KEY not in pushed(retry)
    else:
        assert third["id"] not in (first["id"], unsaved) and len(runs) == 3
        assert pushed(retry)[PREVIOUS_RUN_ID_KEY] == [unsaved], "XCom names the newest failed run, not the saved one"
    assert tasks.values[STATE_STORE_KEY]["id"] == third["id"], "the store names the run this try follows"


LISTING_PATHS = {"tableflow": "/v2/flows/runs", "extend": "/workflow_runs"}


@pytest.mark.parametrize("case", sorted(LISTING_PATHS), indirect=True)
def test_a_retry_after_a_failed_run_its_try_saved_lists_nothing(
    case: Case, conn: str, emulator: Emulator, pdfs: dict[str, Path], mocker: MockerFixture
) -> None:
    """Only a start noted and never saved sends the next try to the task key lookup: a retry after a failed
    run that its try saved reads that run and starts afresh, without listing the flow's runs."""
    tasks = StateStore()
    first = operator(case, conn, pdfs).execute(context(task_try(mocker, 1), tasks))
    emulator.set_status(first["id"], case.failed, error="unreadable scan")
    emulator.clear_requests()
    second = operator(case, conn, pdfs).execute(context(task_try(mocker, 2), tasks))
    listings = [r for r in emulator.requests() if r["method"] == "GET" and r["path"] == LISTING_PATHS[case.platform]]
    assert second["id"] != first["id"] and listings == []


def test_the_run_id_is_saved_the_moment_the_start_returns(
    case: Case, conn: str, emulator: Emulator, pdfs: dict[str, Path], mocker: MockerFixture
) -> None:
    tasks = StateStore()
    first = operator(case, conn, pdfs).execute(context(task_try(mocker, 1), tasks))
    assert tasks.values == {STATE_STORE_KEY: {"id": first["id"], "flow_id": case.flow_id}}


def test_reattach_false_starts_fresh_on_every_try(
    case: Case, conn: str, emulator: Emulator, pdfs: dict[str, Path], mocker: MockerFixture
) -> None:
    tasks = StateStore()
    first = operator(case, conn, pdfs, reattach=False).execute(context(task_try(mocker, 1), tasks))
    second = operator(case, conn, pdfs, reattach=False).execute(context(task_try(mocker, 2), tasks))
    assert first["id"] != second["id"] and len(emulator.runs()) == 2


def test_a_cleared_task_whose_saved_run_was_deleted_looks_it_up(
    case: Case, conn: str, emulator: Emulator, pdfs: dict[str, Path], mocker: MockerFixture
) -> None:
    """A saved id the platform no longer knows (404) is not fatal: the task key lookup takes over."""
    tasks = StateStore()
    tasks.set(STATE_STORE_KEY, {"id": "gone", "flow_id": case.flow_id})
    first = operator(case, conn, pdfs).execute(context(task_try(mocker, 2), tasks))
    assert [run["id"] for run in emulator.runs()] == [first["id"]]


START_PATHS = {
    "tableflow": f"/v2/flows/{RECONCILIATION_FLOW}/run",
    "extend": "/workflow_runs",
    "noxus": f"/v1/workflows/{NOXUS_DOCUMENT_WORKFLOW}/runs",
}


@pytest.mark.parametrize("kind", ["500_after", "drop"])
def test_an_ambiguous_start_is_looked_up_not_resent(
    kind: str, case: Case, conn: str, emulator: Emulator, pdfs: dict[str, Path], mocker: MockerFixture
) -> None:
    """The platform made the run, then the answer was a 5xx or was lost: the run is followed, not made twice.

    Extend's list items carry no metadata, so its lookup reads the candidates in full. Noxus keeps no task
    key: its run is the one whose input names the files this start uploaded.
    """
    emulator.fault(START_PATHS[case.platform], 0, method="POST", kind=kind)
    result = operator(case, conn, pdfs).execute(context(task_try(mocker, 1), StateStore()))
    starts = [r for r in emulator.requests() if r["method"] == "POST" and r["path"] == START_PATHS[case.platform]]
    (run,) = emulator.runs()
    assert result["id"] == run["id"] and len(starts) == 1
    if case.platform == "extend":
        paths = [r["path"] for r in emulator.requests()]
        assert f"/workflow_runs/{run['id']}" in paths, "the metadata came from the full run, not the list item"
