"""A feature that needs a newer Airflow than the running one switches off with one log line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow import __version__ as airflow_version
from airflow.providers.common.compat.sdk import Context, TaskDeferred
from cryptography import __version__ as cryptography_version
from cryptography import fernet as fernet_module
from cryptography.fernet import Fernet
from packaging.version import Version
from pytest_mock import MockerFixture

from airflow_flowruns import version_compat
from airflow_flowruns.exceptions import FlowRunsConfigError
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


class RustMultiFernet:
    """cryptography 51's ``MultiFernet`` as Airflow 3.1 meets it: an object that takes no new attribute."""

    __slots__ = ("fernets",)

    def __init__(self, fernets: list[Any]) -> None:
        self.fernets = fernets


class PythonMultiFernet:
    """cryptography 50's ``MultiFernet``: a Python object, which Airflow 3.1 marks as encrypting."""

    def __init__(self, fernets: list[Any]) -> None:
        self.fernets = fernets


@pytest.fixture
def airflow_3_1(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(version_compat, "AIRFLOW_V_3_2_PLUS", False)
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", Fernet.generate_key().decode())
    version_compat._fernet_takes_airflow_3_1_mark.cache_clear()
    yield
    version_compat._fernet_takes_airflow_3_1_mark.cache_clear()


@pytest.mark.parametrize("wait", [{"deferrable": True}, {"on_review": "airflow"}], ids=["deferrable", "review"])
def test_airflow_3_1_with_cryptography_51_fails_a_deferrable_task_before_it_starts_a_run(
    airflow_3_1: None,
    wait: dict[str, Any],
    tableflow_conn: str,
    emulator: Emulator,
    pdfs: dict[str, Path],
    context: Context,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fernet_module, "MultiFernet", RustMultiFernet)
    with pytest.raises(FlowRunsConfigError, match=r"pip install 'cryptography<51'.*deferrable=False"):
        reconcile(tableflow_conn, pdfs, **wait).execute(context)
    assert emulator.runs() == []


@pytest.mark.parametrize("fernet", ["cryptography below 51", "no Fernet key"])
def test_airflow_3_1_defers_when_it_can_store_the_trigger(
    airflow_3_1: None,
    fernet: str,
    tableflow_conn: str,
    emulator: Emulator,
    pdfs: dict[str, Path],
    context: Context,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if fernet == "no Fernet key":  # Airflow stores trigger kwargs unencrypted, and never marks a MultiFernet
        monkeypatch.setattr(fernet_module, "MultiFernet", RustMultiFernet)
        monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", "")
    else:
        monkeypatch.setattr(fernet_module, "MultiFernet", PythonMultiFernet)
    with pytest.raises(TaskDeferred):
        reconcile(tableflow_conn, pdfs, deferrable=True).execute(context)
    assert len(emulator.runs()) == 1


def test_the_probe_agrees_with_this_airflow_and_cryptography(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow's own ``get_fernet`` with a key set fails exactly when the probe says deferring cannot work."""
    if version_compat.AIRFLOW_V_3_2_PLUS:
        pytest.skip("Airflow 3.2 and later keep no mark on a MultiFernet; run by make compat on Airflow 3.1")
    from airflow.models import crypto

    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", Fernet.generate_key().decode())
    monkeypatch.setattr(crypto, "_fernet", None)
    try:
        crypto.get_fernet()
    except AttributeError:
        stores_triggers = False
    else:
        stores_triggers = True
    version_compat._fernet_takes_airflow_3_1_mark.cache_clear()
    assert version_compat._fernet_takes_airflow_3_1_mark() is stores_triggers


def test_a_deferrable_task_on_this_airflow_defers_or_fails_before_it_starts_a_run(
    tableflow_conn: str,
    emulator: Emulator,
    pdfs: dict[str, Path],
    context: Context,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unmocked: on Airflow 3.1 with cryptography 51 (make compat's unpinned environment) the task names the pin;
    everywhere else it defers."""
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", Fernet.generate_key().decode())
    version_compat._fernet_takes_airflow_3_1_mark.cache_clear()
    cannot = not version_compat.AIRFLOW_V_3_2_PLUS and Version(cryptography_version).major >= 51
    expected: type[BaseException] = FlowRunsConfigError if cannot else TaskDeferred
    with pytest.raises(expected):
        reconcile(tableflow_conn, pdfs, deferrable=True).execute(context)
    assert len(emulator.runs()) == (0 if cannot else 1)
