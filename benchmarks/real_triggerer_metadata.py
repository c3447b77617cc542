"""The metadata database the real-triggerer benchmark's Airflow runs on: SQLite in its ``AIRFLOW_HOME``, or a
PostgreSQL server of its own (``e2e.distributed.services.Postgres``, Debian's package), as production runs.

The two differ in where a query's execution costs CPU: SQLite runs it inside the process that asks (the
triggerer's supervisor), PostgreSQL in its server's processes. So the server's CPU is measured too, apart
from the triggerer's: its process tree, the postmaster's reaped backends included, less the one backend
that serves the benchmark's own once-a-second count of the task instances left deferred.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import create_engine, text

from e2e.distributed.services import Postgres, ensure_packages

DATABASES = ("postgres", "sqlite")
LEFT_DEFERRED = text(
    "SELECT count(*) FROM task_instance WHERE dag_id = :dag_id AND task_id = :task_id AND state = 'deferred'"
)


class MetadataDb:
    """Airflow's metadata database for one benchmark run: its URL, the deferred count, the server's CPU."""

    def __init__(self, kind: str, home: Path, server_root: Path) -> None:
        if kind not in DATABASES:
            raise ValueError(f"unknown metadata database {kind!r}: choose one of {', '.join(DATABASES)}")
        self.kind = kind
        self.server = Postgres(server_root) if kind == "postgres" else None
        self.url = self.server.url if self.server else f"sqlite:///{home / 'airflow.db'}"
        self._engine = create_engine(self.url, connect_args={"timeout": 30} if kind == "sqlite" else {})
        self._conn: Any = None
        self._own_backend: psutil.Process | None = None

    def start(self) -> None:
        if self.server:
            ensure_packages()
            self.server.start()

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._engine.dispose()
        if self.server:
            self.server.stop()

    def deferred_left(self, dag_id: str, task_id: str) -> int:
        if self._conn is None:
            self._conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            if self.server:
                self._own_backend = psutil.Process(self._conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
        left: int = self._conn.execute(LEFT_DEFERRED, {"dag_id": dag_id, "task_id": task_id}).scalar_one()
        return left

    def server_cpu_seconds(self) -> float:
        """CPU seconds the PostgreSQL server has used for everyone but this benchmark (0 for SQLite)."""
        if self.server is None:
            return 0.0
        pid = int((self.server.data / "postmaster.pid").read_text().split()[0])
        postmaster = psutil.Process(pid)
        cpu = postmaster.cpu_times()
        total = cpu.user + cpu.system + cpu.children_user + cpu.children_system
        for child in postmaster.children(recursive=True):
            try:
                times = child.cpu_times()
            except psutil.NoSuchProcess:  # reaped meanwhile: counted in the postmaster's children times
                continue
            if self._own_backend is None or child.pid != self._own_backend.pid:
                total += times.user + times.system
        return total
