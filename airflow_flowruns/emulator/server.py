"""Run the emulator on a background thread, on a free loopback port: what tests and benchmarks use."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Self

import uvicorn

from airflow_flowruns.emulator.app import create_app
from airflow_flowruns.emulator.config import EmulatorConfig
from airflow_flowruns.platforms.values import is_loopback


def url_of(scheme: str, host: str, port: int) -> str:
    """The emulator's URL at the address it listens on (an IPv6 address in brackets)."""
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


class NotLoopback(ValueError):
    """A host other than loopback, asked for without allowing it."""


def bind(host: str, port: int, *, allow_remote: bool = False) -> socket.socket:
    """The listening socket of the emulator, on loopback unless ``allow_remote``: the emulator takes fixed
    test keys, so anyone who can reach it can use it. Every way of serving it binds here."""
    if not allow_remote and not is_loopback(host):
        raise NotLoopback(
            f"{host} is not a loopback address; add --allow-remote (allow_remote=True) to serve it anyway: the "
            "emulator takes fixed test keys, so anyone reaching it can use them"
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


class EmulatorServer:
    """The emulator served on a background thread; on loopback only unless ``allow_remote`` (see ``bind``)."""

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        *,
        allow_remote: bool = False,
    ) -> None:
        self._socket = bind(host, port, allow_remote=allow_remote)
        self.app = create_app(config)
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        self.scheme = "https" if ssl_certfile else "http"
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                log_level="warning",
                access_log=False,
                lifespan="off",
                ssl_certfile=ssl_certfile,
                ssl_keyfile=ssl_keyfile,
                timeout_keep_alive=75,
                timeout_graceful_shutdown=2,
            )
        )
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="flowruns-emulator", daemon=True
        )

    @property
    def url(self) -> str:
        return url_of(self.scheme, self.host, self.port)

    def start(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the emulator did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
