"""``flowruns-emulator``: serve the emulator until interrupted.

It starts by saying what it serves: the address it listens on, then each platform's flows and an
``AIRFLOW_CONN_...`` line to paste for each platform (the discovery call's answer, as text).
"""

from __future__ import annotations

import argparse
import math

import uvicorn
from pydantic import ValidationError

from airflow_flowruns.emulator.app import create_app
from airflow_flowruns.emulator.config import load_config
from airflow_flowruns.emulator.discovery import banner, discovery
from airflow_flowruns.emulator.faults import ALL_KINDS, FaultMode
from airflow_flowruns.emulator.server import NotLoopback, bind, url_of


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="flowruns-emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host other than loopback (the emulator takes fixed test keys: anyone reaching it can use it)",
    )
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--config", help="JSON file with keys, flows and scenarios (default: built-in flows)")
    parser.add_argument("--ssl-certfile")
    parser.add_argument("--ssl-keyfile")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of API requests that meet a fault")
    parser.add_argument("--fault-kinds", help=f"comma-separated, from: {','.join(ALL_KINDS)} (default: all)")
    parser.add_argument("--fault-stall-seconds", type=float, default=35.0)
    parser.add_argument("--fault-seed", type=int)
    parser.add_argument("--rate-limit", type=float, help="requests per second per API key (429 beyond it)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port} is not a port number (0-65535)")
    if args.rate_limit is not None and not (math.isfinite(args.rate_limit) and args.rate_limit > 0):
        parser.error(f"--rate-limit {args.rate_limit} must be a positive number of requests per second")
    config = load_config(args.config)
    config.rate_limit = args.rate_limit
    try:
        config.fault_mode = FaultMode(
            rate=args.fault_rate,
            kinds=args.fault_kinds.split(",") if args.fault_kinds else list(ALL_KINDS),  # validated by FaultMode
            stall_seconds=args.fault_stall_seconds,
            seed=args.fault_seed,
        )
    except ValidationError as exc:
        parser.error(f"fault options: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}")

    try:
        sock = bind(args.host, args.port, allow_remote=args.allow_remote)
    except NotLoopback as exc:
        parser.error(f"--host {exc}")
    url = url_of("https" if args.ssl_certfile else "http", args.host, sock.getsockname()[1])
    print(f"flowruns-emulator listening on {url}", *banner(discovery(config, url)), sep="\n", flush=True)
    server_config = uvicorn.Config(
        create_app(config),
        log_level="warning",
        lifespan="off",
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        timeout_keep_alive=75,
        timeout_graceful_shutdown=2,
    )
    uvicorn.Server(server_config).run(sockets=[sock])
