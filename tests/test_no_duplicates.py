"""A task instance starts at most one run: retries re-attach, and ambiguous start failures are looked up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import Context
from pytest_mock import MockerFixture

from airflow_flowruns.exceptions import FlowRunsApiError, FlowRunsResponseError
from airflow_flowruns.operators.flow_run import FlowRunOperator
from support.emulator import Emulator, task_instance
from support.runs import RECONCILIATION_FLOW

START = f"/v2/flows/{RECONCILIATION_FLOW}/run"


def context(mocker: MockerFixture, try_number: int = 1, task_id: str = "reconcile") -> Context:
    return Context(ti=task_instance(mocker, try_number, dag_id="docs", task_id=task_id, run_id="manual__1"))


def operator(conn_id: str, pdfs: dict[str, Path], **kwargs: Any) -> FlowRunOperator:
    return FlowRunOperator(
        task_id="reconcile",
        flowruns_conn_id=conn_id,
        flow_id=RECONCILIATION_FLOW,
        files={"purchase_order": pdfs["po"], "invoice": pdfs["inv"]},
        wait_for_completion=False,
        **kwargs,
    )


def test_a_retry_reattaches_to_the_run_of_an_earlier_try(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path], mocker: MockerFixture
) -> None:
    first = operator(tableflow_conn, pdfs).execute(context(mocker, try_number=1))
    second = operator(tableflow_conn, pdfs).execute(context(mocker, try_number=2))
    assert second["id"] == first["id"]
    assert len(emulator.runs()) == 1


def test_other_task_instances_start_their_own_runs(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path], mocker: MockerFixture
) -> None:
    operator(tableflow_conn, pdfs).execute(context(mocker, task_id="a"))
    operator(tableflow_conn, pdfs).execute(context(mocker, task_id="b", try_number=2))
    assert len(emulator.runs()) == 2


def test_reattach_can_be_turned_off(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path], mocker: MockerFixture
) -> None:
    operator(tableflow_conn, pdfs).execute(context(mocker))
    operator(tableflow_conn, pdfs, reattach=False).execute(context(mocker, try_number=2))
    assert len(emulator.runs()) == 2


@pytest.mark.parametrize("kind", ["drop", "malformed"])
def test_an_accepted_start_whose_answer_was_lost_is_found_not_repeated(
    kind: str, tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path], mocker: MockerFixture
) -> None:
    emulator.fault(START, 0, method="POST", kind=kind)
    result = operator(tableflow_conn, pdfs).execute(context(mocker))
    (run,) = emulator.runs()
    assert result["id"] == run["id"]
    assert [r["method"] for r in emulator.requests() if r["path"] == START] == ["POST"]


def test_a_start_refused_with_5xx_is_looked_up_then_sent_again(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path], mocker: MockerFixture
) -> None:
    emulator.fault(START, 503, '{"error": "Unavailable", "message": "try later"}', method="POST")
    result = operator(tableflow_conn, pdfs).execute(context(mocker))
    (run,) = emulator.runs()
    assert result["id"] == run["id"]
    paths = [r["path"] for r in emulator.requests()]
    # the flow was read once for the task: the second start call goes without reading it again
    assert paths == ["/v2/flows", START, "/v2/flows/runs", START], "looked up, nothing there, sent again"


def test_a_start_that_keeps_failing_gives_up_after_three_attempts(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path], mocker: MockerFixture
) -> None:
    emulator.fault(START, 503, '{"error": "Unavailable", "message": "try later"}', method="POST", count=10)
    with pytest.raises(FlowRunsApiError, match="HTTP 503"):
        operator(tableflow_conn, pdfs).execute(context(mocker))
    assert emulator.runs() == []
    assert [r["path"] for r in emulator.requests()].count(START) == 3


def test_a_4xx_start_is_not_looked_up(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path], mocker: MockerFixture
) -> None:
    emulator.fault(START, 422, '{"error": "Unprocessable", "message": "bad"}', method="POST")
    with pytest.raises(FlowRunsApiError, match="HTTP 422"):
        operator(tableflow_conn, pdfs).execute(context(mocker))
    assert "/v2/flows/runs" not in [r["path"] for r in emulator.requests()]


def test_an_unreadable_answer_with_no_run_behind_it_is_raised(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path], mocker: MockerFixture
) -> None:
    emulator.fault(START, 200, "<html><title>Proxy</title></html>", method="POST", content_type="text/html", count=3)
    with pytest.raises(FlowRunsResponseError, match="HTML page"):
        operator(tableflow_conn, pdfs).execute(context(mocker))
    assert emulator.runs() == []


def test_a_call_before_the_start_that_fails_is_not_looked_up(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path], mocker: MockerFixture
) -> None:
    """Only the start call can have started a run; a failed flow check before it cannot."""
    emulator.fault("/v2/flows", 503, '{"detail": "down"}', method="GET", count=10)
    with pytest.raises(FlowRunsApiError, match="'list flows' failed \\(HTTP 503\\)"):
        operator(tableflow_conn, pdfs).execute(context(mocker))
    paths = [r["path"] for r in emulator.requests()]
    assert "/v2/flows/runs" not in paths and START not in paths
