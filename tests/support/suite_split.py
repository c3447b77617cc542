"""The suite's two kinds of test, a pytest plugin (``tests/conftest.py`` loads it). A unit test runs in the test
process against the emulator on loopback; an integration test starts another process: Airflow's CLI (``airflow
dags test``, ``airflow db migrate``), another Python (memory measured in a fresh interpreter) or the vendor SDKs'
virtualenv, or it runs at scale. ``make test-fast`` runs ``-m unit``; ``make test`` runs both."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.airflow import ROOT

PROJECT_PROGRAMS = frozenset({Path(sys.executable).parent, ROOT / ".venv-sdk" / "bin"})
"""Where the programs a unit test must not start live: the tests' virtualenv (Python, Airflow's CLI, the
emulator's command) and the vendor SDKs'. The probes libraries run for themselves (``file``, ``ldconfig``) are
not counted: whether one runs inside a test depends only on which test imported the library first."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test is ``unit`` or ``integration`` (``pyproject.toml`` describes both): integration when marked
    ``integration``, or when it needs the migrated ``airflow_home``."""
    for item in items:
        integration = item.get_closest_marker("integration") is not None or "airflow_home" in getattr(
            item, "fixturenames", ()
        )
        item.add_marker(pytest.mark.integration if integration else pytest.mark.unit)


def project_program(event: str, args: tuple[Any, ...]) -> str | None:
    """What an audit event (``sys.addaudithook``) starts, when that is a program of PROJECT_PROGRAMS or a fork
    of the test process; None for any other event."""
    if event == "os.fork":
        return "a fork of the test process"
    if event == "subprocess.Popen":
        executable, command = args[0], args[1]
        program = executable or (command if isinstance(command, str | bytes | os.PathLike) else command[0])
    elif event in ("os.posix_spawn", "os.exec"):
        program, command = args[0], args[1]
    else:
        return None
    return f"{command}" if Path(os.fsdecode(program)).parent in PROJECT_PROGRAMS else None


class StartedPrograms:
    """The programs a unit test started. The audit hook sees ``subprocess``, ``os.fork`` and the rest whoever
    calls them, and cannot be removed, so it records only while ``watching`` is set."""

    watching = False
    started: list[str] = []

    @classmethod
    def note(cls, event: str, args: tuple[Any, ...]) -> None:
        if cls.watching and (program := project_program(event, args)) is not None:
            cls.started.append(program)


sys.addaudithook(StartedPrograms.note)


@pytest.fixture(autouse=True)
def unit_tests_start_no_program(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails a unit test that starts Python or Airflow: it is an integration test, to be kept out of
    ``make test-fast``."""
    if request.node.get_closest_marker("integration") is not None:
        yield
        return
    StartedPrograms.started, StartedPrograms.watching = [], True
    try:
        yield
    finally:
        StartedPrograms.watching = False
    if StartedPrograms.started:
        pytest.fail(f"a unit test started {StartedPrograms.started}: mark it integration", pytrace=False)
