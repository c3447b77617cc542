"""``flowruns-emulator``: serve the emulator until interrupted."""

from __future__ import annotations

import argparse

import uvicorn

from airflow_flowruns.emulator.app import create_app
from airflow_flowruns.emulator.config import load_config
from airflow_flowruns.emulator.server import bind


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="flowruns-emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--config", help="JSON file with keys, flows and scenarios (default: built-in flows)")
    parser.add_argument("--ssl-certfile")
    parser.add_argument("--ssl-keyfile")
    args = parser.parse_args(argv)

    sock = bind(args.host, args.port)
    scheme = "https" if args.ssl_certfile else "http"
    print(f"flowruns-emulator listening on {scheme}://{args.host}:{sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(
        create_app(load_config(args.config)),
        log_level="warning",
        lifespan="off",
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        timeout_keep_alive=75,
    )
    uvicorn.Server(config).run(sockets=[sock])
