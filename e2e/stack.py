"""The processes of the e2e run: the emulator and Airflow's components, each its own process so any one
can be killed, all of them writing only under one temporary folder, and all of them stopped at the end.

Every process is started in a session of its own. Airflow's task processes move to process groups of
their own but stay in the session, so stopping by session id also reaches workers and trigger runners
whose parent was killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil

BIN = Path(sys.executable).parent
T = TypeVar("T")


class E2EError(Exception):
    """The environment did not come up or behave as the run needs; not a finding about the provider."""


@contextlib.contextmanager
def read_only(db: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a SQLite database that Airflow keeps writing, closed when done (a
    ``with sqlite3.connect(...)`` block only commits; the connection and its file stay open)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        yield conn


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
    """Poll ``probe`` until it returns something other than None, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise E2EError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Stack:
    """Starts, kills and stops the processes; ``root`` is the only folder anything is written to."""

    def __init__(self, root: Path, *, parallelism: int) -> None:
        self.root = root
        self.home = root / "airflow"
        self.dags = root / "dags"
        self.procs = root / "procs"
        tmp = root / "tmp"
        for folder in (self.home, self.dags, self.procs, tmp):
            folder.mkdir(parents=True, exist_ok=True)
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.fernet_key = _fernet_key()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.killed: set[str] = set()
        self._sessions: set[int] = set()
        self.env = {
            **os.environ,
            "PYTHONDONTWRITEBYTECODE": "1",
            "TMPDIR": str(tmp),
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API__MAXIMUM_PAGE_LIMIT": "1000",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            # A worker killed without a word is noticed within seconds, not the default five minutes.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            # A killed triggerer's triggers move to the new one once its heartbeat is this old.
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        }

    # --- processes -------------------------------------------------------------------------------

    def run(self, name: str, argv: list[str], timeout: float) -> None:
        """Run a command to its end, its output kept under ``procs``."""
        with open(self.procs / f"{name}.log", "ab") as out:
            done = subprocess.run(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        if done.returncode != 0:
            raise E2EError(f"{' '.join(argv)} failed:\n{self.tail(name)}")

    def start(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` in a session of its own; ``env`` adds to (or overrides) the stack's environment."""
        with open(self.procs / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                argv,
                env={**self.env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.processes[name] = proc
        self._sessions.add(proc.pid)
        return proc

    def airflow(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        return self.start(name, [str(BIN / "airflow"), *args], env)

    def start_airflow(self, migrate_timeout: float = 300) -> None:
        """Migrate the database, then start one API server, scheduler, DAG processor and triggerer."""
        self.run("db-migrate", [str(BIN / "airflow"), "db", "migrate"], timeout=migrate_timeout)
        self.airflow("api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.api_port))
        self.airflow("scheduler", "scheduler", "--skip-serve-logs")
        self.airflow("dag-processor", "dag-processor")
        self.airflow("triggerer", "triggerer", "--skip-serve-logs")

    def kill(self, name: str) -> list[int]:
        """SIGKILL a component and everything under it at once, as a lost machine would stop."""
        proc = psutil.Process(self.processes[name].pid)
        victims = [proc, *proc.children(recursive=True)]
        for victim in victims:
            _signal(victim, signal.SIGKILL)
        self.processes[name].wait(timeout=30)
        self.killed.add(name)
        return [victim.pid for victim in victims]

    def stop_one(self, name: str, timeout: float = 60) -> list[int]:
        """SIGTERM a component and wait for it, as a deploy stops it; SIGKILL whatever of it lingers."""
        proc = psutil.Process(self.processes[name].pid)
        tree = [proc, *proc.children(recursive=True)]
        _signal(proc, signal.SIGTERM)
        try:
            self.processes[name].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise E2EError(f"{name} did not stop within {timeout:.0f} s of SIGTERM:\n{self.tail(name)}") from None
        finally:
            self.killed.add(name)
            for lingering in tree:
                _signal(lingering, signal.SIGKILL)
        return [p.pid for p in tree]

    def check_alive(self) -> None:
        for name, proc in self.processes.items():
            if name not in self.killed and proc.poll() is not None:
                raise E2EError(f"{name} exited with code {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.procs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def in_our_sessions(self) -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter():
            try:
                if os.getsid(proc.pid) in self._sessions:
                    found.append(proc)
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        return found

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM every component, then SIGKILL whatever of our sessions is still there."""
        for proc in self.processes.values():
            if proc.poll() is None:
                _signal(psutil.Process(proc.pid), signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for leftover in self.in_our_sessions():
            _signal(leftover, signal.SIGKILL)
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.wait(timeout=10)


def _signal(proc: psutil.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(sig)


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


class AirflowApi:
    """The public REST API (``/api/v2``) with a token from the simple auth manager's all-admins mode."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=60)

    def login(self) -> None:
        response = self.http.get("/auth/token")
        response.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def call(self, method: str, path: str, *, json_body: Any = None, **params: Any) -> Any:
        response = self.http.request(method, f"/api/v2{path}", json=json_body, params=params or None)
        if response.status_code >= 400:
            raise E2EError(f"{method} /api/v2{path}: HTTP {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    def healthy(self) -> bool | None:
        try:
            return True if self.http.get("/api/v2/monitor/health", timeout=5).status_code == 200 else None
        except httpx.HTTPError:
            return None

    def add_connection(self, conn_id: str, conn_type: str, host: str, password: str, extra: Mapping[str, Any]) -> None:
        body = {
            "connection_id": conn_id,
            "conn_type": conn_type,
            "host": host,
            "password": password,
            "extra": json.dumps(dict(extra)),
        }
        self.call("POST", "/connections", json_body=body)
