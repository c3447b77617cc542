"""``python -m e2e.distributed.emulator``: ``flowruns-emulator`` with two read-only routes for the checks.

The distributed run must tell which process sent each request (to show how processes shared the rate
limit) and when each run was created (to check that no two runs of a task were alive at once). The
emulator's own request log keeps neither, so this entry point serves the same app with a middleware
that notes each API request's client port, status and time, and routes that return those notes and the
runs' timelines. Both routes sit under the control prefix, so no fault or rate limit ever touches them.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response

from airflow_flowruns.emulator.app import create_app
from airflow_flowruns.emulator.config import load_config
from airflow_flowruns.emulator.faults import ALL_KINDS, FaultMode
from airflow_flowruns.emulator.server import bind
from airflow_flowruns.emulator.state import EmulatorState

CONTROL_PREFIX = "/_emulator"
TRAFFIC_PATH = f"{CONTROL_PREFIX}/e2e/traffic"
TIMELINES_PATH = f"{CONTROL_PREFIX}/e2e/timelines"
FAULT_KINDS = tuple(kind for kind in ALL_KINDS if not kind.startswith("429"))
"""Every fault but injected 429s: here every 429 comes from the per-key rate limit, so counting them counts it."""


def traced(app: FastAPI) -> FastAPI:
    """Add the client-port notes and the two routes to an emulator app."""
    notes: list[tuple[int, int, float]] = []
    lock = threading.Lock()

    @app.middleware("http")
    async def note(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        if not request.url.path.startswith(CONTROL_PREFIX) and request.client is not None:
            with lock:
                notes.append((request.client.port, response.status_code, time.time()))
        return response

    @app.get(TRAFFIC_PATH)
    def traffic() -> list[tuple[int, int, float]]:
        """Every API request so far as (client port, status, unix time)."""
        with lock:
            return list(notes)

    @app.get(TIMELINES_PATH)
    def timelines() -> list[dict[str, Any]]:
        """Every run with its creation time and its status history (raw status, unix time), in creation order."""
        state: EmulatorState = app.state.emulator
        with state.lock:
            runs = list(state.runs.values())
        return [
            {"id": run.id, "created": run.created, "history": [[e.status, e.time] for e in run.history()]}
            for run in runs
        ]

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m e2e.distributed.emulator", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--config", required=True)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--fault-stall-seconds", type=float, default=8.0)
    parser.add_argument("--fault-seed", type=int)
    parser.add_argument("--rate-limit", type=float)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    config.rate_limit = args.rate_limit
    config.fault_mode = FaultMode(
        rate=args.fault_rate, kinds=list(FAULT_KINDS), stall_seconds=args.fault_stall_seconds, seed=args.fault_seed
    )
    sock = bind("127.0.0.1", args.port)
    print(f"flowruns-emulator listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    server = uvicorn.Config(
        traced(create_app(config)),
        log_level="warning",
        lifespan="off",
        timeout_keep_alive=75,
        timeout_graceful_shutdown=2,
    )
    uvicorn.Server(server).run(sockets=[sock])


if __name__ == "__main__":
    main()
