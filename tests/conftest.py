"""Shared fixtures: one emulator on loopback for the session, reset before every test that uses it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

# Airflow reads its home at import time: give the test session a throwaway one before anything imports it.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="flowruns-tests-airflow-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
# Tests poll every few milliseconds; the provider's floor for real deployments is a second.
os.environ["AIRFLOW__FLOWRUNS__MIN_POLL_INTERVAL"] = "0.01"

import httpx
import pytest
from airflow.providers.common.compat.sdk import Context
from pytest_mock import MockerFixture

from airflow_flowruns.emulator import EmulatorServer
from hostile_server import HostileServer

API_KEY = "emulator-key"
# Retries stay on in tests, only with short waits, so retry paths run without slowing the suite.
FAST_RETRIES: dict[str, Any] = {"retry_min_wait": 0.01, "retry_max_wait": 0.05, "max_retries": 2, "timeout": 10}


class Emulator:
    """The emulator's control API, as tests use it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.control = httpx.Client(base_url=f"{url}/_emulator", timeout=10)

    def reset(self) -> None:
        self.control.post("/reset").raise_for_status()

    def runs(self) -> list[dict[str, Any]]:
        return self.control.get("/runs").json()

    def requests(self) -> list[dict[str, Any]]:
        return self.control.get("/requests").json()

    def clear_requests(self) -> None:
        """Forget the requests logged so far, so a test counts only its own."""
        self.control.delete("/requests").raise_for_status()

    def set_status(self, run_id: str, status: str, error: str | None = None) -> None:
        body = {"status": status, "error": error, "message": error}
        self.control.post(f"/runs/{run_id}/status", json=body).raise_for_status()

    def fault(
        self,
        path: str,
        status: int,
        body: str = "",
        *,
        method: str | None = None,
        count: int = 1,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        kind: str | None = None,
    ) -> None:
        spec = {
            "kind": kind,
            "method": method,
            "path": path,
            "status": status,
            "body": body,
            "count": count,
            "content_type": content_type,
            "headers": headers or {},
        }
        self.control.post("/faults", json=spec).raise_for_status()

    def scenario(self, flow_id: str, platform: str = "tableflow", **scenario: Any) -> None:
        self.control.put(f"/{platform}/flows/{flow_id}/scenario", json=scenario).raise_for_status()


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    with EmulatorServer() as server:
        yield server


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> Emulator:
    emu = Emulator(emulator_server.url)
    emu.reset()
    return emu


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServer]:
    """A hostile HTTP server on loopback (tests/hostile_server.py), one per test module."""
    with HostileServer() as server:
        yield server


def set_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, conn_type: str, url: str, **extra: Any) -> str:
    conn = {
        "conn_type": conn_type,
        "password": extra.pop("password", API_KEY),
        "host": url,
        "extra": {**FAST_RETRIES, **extra},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conn_id


def task_instance(mocker: MockerFixture, try_number: int = 1, **identity: Any) -> MagicMock:
    """A task instance as the operator reads it (unmapped unless ``map_index`` says otherwise); a test reads what
    the operator pushed to XCom from its ``xcom_push`` calls."""
    names = {"dag_id": "d", "task_id": "t", "run_id": "r", "map_index": -1, **identity}
    return mocker.MagicMock(try_number=try_number, **names)


def pushed(ti: MagicMock) -> dict[str, list[Any]]:
    """Every value the operator pushed to XCom through ``ti``, by key, in order."""
    values: dict[str, list[Any]] = {}
    for call in ti.xcom_push.call_args_list:
        values.setdefault(call.kwargs["key"], []).append(call.kwargs["value"])
    return values


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


# --- `airflow dags test` against the emulator -------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW = str(Path(sys.executable).parent / "airflow")


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("airflow-home")
    subprocess.run([AIRFLOW, "db", "migrate"], env=airflow_env(home), check=True, capture_output=True)
    return home


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        **extra,
    }


def dags_test(
    home: Path, dag_id: str, logical_date: str | None = None, **env: str
) -> tuple[str, dict[str, str], dict[str, Any]]:
    command = [AIRFLOW, "dags", "test", dag_id, *([logical_date] if logical_date else [])]
    done = subprocess.run(command, env=airflow_env(home, **env), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with sqlite3.connect(home / "airflow.db") as db:
        run_id, state = db.execute(
            "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
        ).fetchone()
        tasks = dict(db.execute("SELECT task_id, state FROM task_instance WHERE run_id = ?", (run_id,)).fetchall())
        xcom = xcom_values(db, run_id)
    return state, tasks, xcom


def xcom_values(db: sqlite3.Connection, run_id: str) -> dict[str, Any]:
    """A DAG run's XComs by ``task.key``, decoded."""
    return {
        f"{task}.{key}": xcom_value(value)
        for task, key, value in db.execute("SELECT task_id, key, value FROM xcom WHERE run_id = ?", (run_id,))
    }


def xcom_value(stored: object) -> Any:
    """An XCom value as SQLite hands it back. Airflow declares the column JSON, which gives it SQLite's numeric
    affinity: a bare number comes back as a number, every other value as its JSON text."""
    return json.loads(stored) if isinstance(stored, str) else stored
