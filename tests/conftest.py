"""Shared fixtures: one emulator on loopback for the session, reset before every test that uses it. The split into
unit and integration tests is the plugin ``support/suite_split.py``."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import MagicMock

# Airflow reads its home at import time: give the test session a throwaway one before anything imports it.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="flowruns-tests-airflow-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
# Tests poll every few milliseconds; the provider's floor for real deployments is a second.
os.environ["AIRFLOW__FLOWRUNS__MIN_POLL_INTERVAL"] = "0.01"

import pytest
from airflow.providers.common.compat.sdk import Context
from pytest_mock import MockerFixture

from airflow_flowruns.emulator import EmulatorServer
from support.airflow import AIRFLOW, airflow_env
from support.emulator import Emulator, set_connection, task_instance
from support.hostile_server import HostileServer

pytest_plugins = ["support.suite_split"]


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    with EmulatorServer() as server:
        yield server


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> Iterator[Emulator]:
    emu = Emulator(emulator_server.url)
    with emu.control:  # its connection closed after the test, not left to the garbage collector
        emu.reset()
        yield emu


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServer]:
    """A hostile HTTP server on loopback (tests/support/hostile_server.py), one per test module."""
    with HostileServer() as server:
        yield server


@pytest.fixture
def ti(mocker: MockerFixture) -> MagicMock:
    return task_instance(mocker)


@pytest.fixture
def context(ti: MagicMock) -> Context:
    """A task instance's context as the operator reads it: first try, unmapped."""
    return Context(ti=ti)


@pytest.fixture
def tableflow_conn(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> str:
    return set_connection(monkeypatch, "tableflow_test", "tableflow", emulator.url)


@pytest.fixture
def pdf(tmp_path: Path) -> Path:
    path = tmp_path / "doc.pdf"
    path.write_bytes(b"%PDF-1.4\n% test document\n%%EOF\n")
    return path


@pytest.fixture
def pdfs(tmp_path: Path) -> dict[str, Path]:
    made = {}
    for name in ("po", "inv", "a", "b"):
        made[name] = tmp_path / f"{name}.pdf"
        made[name].write_bytes(b"%PDF-1.4\n% " + name.encode() + b"\n%%EOF\n")
    return made


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("airflow-home")
    subprocess.run([AIRFLOW, "db", "migrate"], env=airflow_env(home), check=True, capture_output=True)
    return home
