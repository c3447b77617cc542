"""PostgreSQL and Redis from Debian's packages, run as services of one e2e run under its temporary folder.

Nothing of the machine's own services is used or touched: each server gets its own data folder, a free
loopback port and a socket folder under the run's root, and is stopped at the end of the run. PostgreSQL
refuses to run as root, so its data folder belongs to an unprivileged system user made for it.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from e2e.stack import E2EError, Stack, free_port, wait_for

PACKAGES = {"redis-server": "redis-server", "pg_ctl": "postgresql"}
"""A command the run needs, and the Debian package that brings it."""
POSTGRES_USER = "flowruns-pg"
"""The system user PostgreSQL's server runs as; created when missing."""
DATABASE = "airflow"


def ensure_packages() -> None:
    """Install, with apt-get, whichever of PostgreSQL and Redis the machine does not have yet."""
    missing = sorted({package for command, package in PACKAGES.items() if _find(command) is None})
    if not missing:
        return
    print(f"installing {', '.join(missing)} from Debian's packages", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=600"]
    for argv in (["apt-get", *lock, "update", "-qq"], ["apt-get", *lock, "install", "-y", "-qq", *missing]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise E2EError(f"{' '.join(argv)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def _find(command: str) -> str | None:
    """A command on PATH, or PostgreSQL's, which Debian keeps under /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(command)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
    return next((str(bin_dir / command) for bin_dir in versions if (bin_dir / command).exists()), None)


def _tool(command: str) -> str:
    found = _find(command)
    if found is None:
        raise E2EError(f"{command} not found after installing {PACKAGES.get(command, command)}")
    return found


class Postgres:
    """A PostgreSQL cluster in ``root`` owned by :data:`POSTGRES_USER`, reached over 127.0.0.1 (trust)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg2://{DATABASE}@127.0.0.1:{self.port}/{DATABASE}"
        self.started = False

    def _as_owner(self, *argv: str, timeout: float = 120) -> None:
        done = subprocess.run(
            ["runuser", "-u", POSTGRES_USER, "--", *argv], capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise E2EError(f"{' '.join(argv)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")

    def start(self) -> None:
        _ensure_user(POSTGRES_USER)
        owner = pwd.getpwnam(POSTGRES_USER)
        self.root.mkdir(parents=True)
        os.chown(self.root, owner.pw_uid, owner.pw_gid)
        for parent in self.root.parents:  # the owner must be able to reach its folder through the run's root
            if parent == Path(parent.anchor) or parent == Path("/tmp"):
                break
            parent.chmod(parent.stat().st_mode | 0o111)
        self._as_owner(_tool("initdb"), "-D", str(self.data), "-U", DATABASE, "-A", "trust", "-E", "UTF8")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=300"
        self._as_owner(
            _tool("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options, "-w", "start"
        )
        self.started = True
        self._as_owner(_tool("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", DATABASE, DATABASE)

    def stop(self) -> None:
        if self.started:
            self._as_owner(_tool("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=60)
            self.started = False

    def dump(self, path: Path) -> Path:
        """A full plain-text dump of the database (schema and every row)."""
        argv = [_tool("pg_dump"), "-h", "127.0.0.1", "-p", str(self.port), "-U", DATABASE, "-f", str(path), DATABASE]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise E2EError(f"pg_dump failed: {done.stderr[-2000:]}")
        return path

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return self._read(sql, params)[1]

    def table(self, table: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and every row of ``table``."""
        return self._read(f'SELECT * FROM "{table}"', ())

    def _read(self, sql: str, params: tuple[Any, ...]) -> tuple[list[str], list[tuple[Any, ...]]]:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=DATABASE, dbname=DATABASE)
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
                return [d[0] for d in cursor.description or ()], list(cursor.fetchall())
        finally:
            conn.close()


def _ensure_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        argv = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name]
        subprocess.run(argv, check=True, capture_output=True, timeout=60)


class Redis:
    """A Redis server with an append-only file, so a restart keeps the queued Celery messages."""

    def __init__(self, stack: Stack, root: Path) -> None:
        self.stack = stack
        self.root = root
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.generation = 0

    @property
    def name(self) -> str:
        return f"redis-{self.generation}"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.generation += 1
        argv = [_tool("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root)]
        argv += ["--appendonly", "yes", "--save", "", "--daemonize", "no", "--protected-mode", "yes"]
        self.stack.start(self.name, argv)
        wait_for("Redis", self._ping, timeout=30, interval=0.2)

    def restart(self) -> None:
        """SIGTERM (Redis writes its append-only file and exits), then start again on the same port."""
        self.stack.stop_one(self.name, timeout=60)
        self.start()

    def _ping(self) -> bool | None:
        self.stack.check_alive()
        try:
            return True if self.client().ping() else None
        except Exception:
            return None

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)

    def keyspace(self) -> Iterator[tuple[str, bytes]]:
        """Every key and value, as (key, bytes); Celery's base64 message bodies are also yielded decoded."""
        client = self.client()
        for key in client.scan_iter(count=1000):
            values = _values(client, key, client.type(key).decode())
            name = key.decode(errors="replace")
            yield name, key
            for value in values:
                yield name, value
                yield from ((name, decoded) for decoded in _celery_bodies(value))


def _values(client: Any, key: bytes, kind: str) -> list[bytes]:
    if kind == "string":
        return [client.get(key) or b""]
    if kind == "list":
        return list(client.lrange(key, 0, -1))
    if kind == "hash":
        return [field + b"=" + value for field, value in client.hgetall(key).items()]
    if kind == "set":
        return list(client.smembers(key))
    if kind == "zset":
        return [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
    return []


def _celery_bodies(value: bytes) -> Iterator[bytes]:
    """The decoded body of a Celery message kept as JSON with a base64 body (kombu's Redis transport)."""
    if not value.startswith(b"{"):
        return
    try:
        message = json.loads(value)
    except ValueError:
        return
    body = message.get("body") if isinstance(message, dict) else None
    if isinstance(body, str):
        try:
            yield base64.b64decode(body, validate=True)
        except ValueError:
            return
