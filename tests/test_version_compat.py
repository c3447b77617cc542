"""A feature that needs a newer Airflow than the running one switches off with one log line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from airflow import __version__ as airflow_version
from airflow.providers.common.compat.sdk import Context, TaskDeferred
from pytest_mock import MockerFixture

from airflow_flowruns.operators import _reattach, _waiting
from airflow_flowruns.operators.flow_run import FlowRunOperator
from airflow_flowruns.version_compat import missing_feature
from support.emulator import Emulator, task_instance
from support.runs import RECONCILIATION_FLOW

LOGGER = "airflow_flowruns.version_compat"


@pytest.fixture(autouse=True)
def said_nothing_yet() -> None:
    missing_feature.cache_clear()


def reconcile(conn_id: str, pdfs: dict[str, Path], **kwargs: Any) -> FlowRunOperator:
    """The operator both features are seen through; ``kwargs`` choose how it waits."""
    return FlowRunOperator(
        task_id="reconcile",
        flowruns_conn_id=conn_id,
        flow_id=RECONCILIATION_FLOW,
        files={"purchase_order": pdfs["po"], "invoice": pdfs["inv"]},
        **kwargs,
    )


def test_a_missing_feature_is_said_once_per_process(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        missing_feature("Teleporting", "9.9")
        missing_feature("Teleporting", "9.9")
    assert [r.getMessage() for r in caplog.records] == [
        f"Teleporting needs Airflow 9.9 or later; this is Airflow {airflow_version}, so it is off."
    ]


@pytest.mark.parametrize("airflow_3_3", [True, False])
def test_deferring_says_on_airflow_before_3_3_that_a_kill_will_not_cancel_the_run(
    airflow_3_3: bool,
    tableflow_conn: str,
    emulator: Emulator,
    pdfs: dict[str, Path],
    context: Context,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(_waiting, "AIRFLOW_V_3_3_PLUS", airflow_3_3)
    operator = reconcile(tableflow_conn, pdfs, deferrable=True)
    with caplog.at_level(logging.WARNING, logger=LOGGER), pytest.raises(TaskDeferred):
        operator.execute(context)
    # Only this feature's line: on Airflow before 3.3 the re-attach lookup says its own once as well.
    said = [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and r.getMessage().startswith("Cancelling the run when its deferred task")
    ]
    assert len(said) == (0 if airflow_3_3 else 1)


@pytest.mark.parametrize("airflow_3_3", [True, False])
def test_retries_say_once_on_airflow_before_3_3_that_runs_are_found_by_task_key_only(
    airflow_3_3: bool,
    tableflow_conn: str,
    emulator: Emulator,
    pdfs: dict[str, Path],
    mocker: MockerFixture,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No task state store before Airflow 3.3: every try would look for one, and the log says so once."""
    monkeypatch.setattr(_reattach, "AIRFLOW_V_3_3_PLUS", airflow_3_3)
    operator = reconcile(tableflow_conn, pdfs, wait_for_completion=False)
    with caplog.at_level(logging.INFO):
        runs = [operator.execute(Context(ti=task_instance(mocker, try_number))) for try_number in (1, 2, 3)]
    assert [run["id"] for run in runs] == [runs[0]["id"]] * 3, "each retry follows the first run, by its task key"
    said = [r.getMessage() for r in caplog.records if "state store" in r.getMessage()]
    if airflow_3_3:
        assert said == []
    else:
        assert said == [
            "Finding an earlier try's run in the task state store (task keys are used instead) needs Airflow 3.3 "
            f"or later; this is Airflow {airflow_version}, so it is off."
        ]
