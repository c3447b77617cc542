"""`make bench`: the seven benchmarks, each against a baseline measured in the same run.

python -m benchmarks [--sizes 1000,5000,10000] [--poll-interval 30] [--window 60] [--upload-mib 1024]
                     [--upload-rounds 3] [--economy-runs 1000] [--extend-runs 10000] [--extend-limit 5]
                     [--real-sizes 1000,10000] [--real-platforms tableflow,extend] [--real-upto 20]
                     [--real-db postgres|sqlite]
                     [--body-polls 200] [--backfill-sizes 10000] [--backfill-mapped-size 1000]
                     [--backfill-platforms tableflow,extend] [--backfill-limit 5]
                     [--only density,uploads,economy,extend,real_triggerer,body_reading,backfill]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import backfill, body_reading, extend_economy, real_triggerer, request_economy, trigger_density, uploads
from benchmarks.common import RESULTS, Emulator, emulator, table, write_result
from benchmarks.real_triggerer_metadata import DATABASES
from e2e.harness import interrupt

DENSITY_COLUMNS = [
    "trigger",
    "n",
    "events",
    "polls_per_run",
    "requests_per_run",
    "cpu_ms_per_1000_polls",
    "cores",
    "rss_kib_per_trigger",
    "loop_lag_p50_ms",
    "loop_lag_p99_ms",
    "loop_lag_max_ms",
    "tcp_connections",
    "detect_p50_s",
    "detect_p99_s",
]
REAL_COLUMNS = [
    "platform",
    "trigger",
    "n",
    "database",
    "created",
    "events",
    "still_deferred",
    "polls_per_run",
    "requests_per_run",
    "cpu_ms_per_poll",
    "cores",
    "supervisor_cores",
    "runner_cores",
    "database_cores",
    "loop_lag_p99_ms",
    "loop_lag_max_ms",
    "tcp_connections",
    "detect_p99_s",
]

BACKFILL_COLUMNS = [
    "mode",
    "platform",
    "documents",
    "limit_per_s",
    "settled",
    "duplicates",
    "wall_s",
    "airflow_cpu_s",
    "cpu_per_document_ms",
    "task_instances",
    "requests_per_document",
    "wall_vs_limit",
    "worker_peak_rss_mib",
    "triggerer_peak_rss_mib",
]
BODY_COLUMNS = ["client", "answer", "variant", "bytes", "cpu_us_per_poll", "cpu_over_plain", "cpu_us_added"]


def machine() -> dict[str, Any]:
    with open("/proc/meminfo") as meminfo:
        mem_kib = int(meminfo.readline().split()[1])
    return {"cores": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1), "python": platform.python_version()}


def plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (cpu, lag) = plt.subplots(1, 2, figsize=(10, 4))
    for kind in trigger_density.TRIGGERS:
        mine = sorted((r for r in rows if r["trigger"] == kind), key=lambda r: r["n"])
        cpu.plot([r["n"] for r in mine], [r["cpu_ms_per_1000_polls"] / 1000 for r in mine], marker="o", label=kind)
        lag.plot([r["n"] for r in mine], [r["loop_lag_p99_ms"] for r in mine], marker="o", label=kind)
    cpu.set(title="CPU per poll", xlabel="triggers in flight", ylabel="ms")
    lag.set(title="event-loop lag p99", xlabel="triggers in flight", ylabel="ms")
    for axis in (cpu, lag):
        axis.legend()
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def run_backfill(emu: Emulator, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="flowruns-bench-backfill-") as tmp:
        rows = backfill.run(
            emu,
            Path(tmp),
            args.backfill_platforms.split(","),
            [int(n) for n in args.backfill_sizes.split(",") if n],
            args.backfill_mapped_size,
            args.backfill_limit,
        )
    print("\n7. backfill: one mapped task per document, one batch task\n" + table(rows, BACKFILL_COLUMNS))
    print("\ntargets\n" + "\n".join(backfill.targets(rows)))
    earlier = RESULTS / "backfill.json"
    write_result("backfill", backfill.merge(json.loads(earlier.read_text()) if earlier.exists() else [], rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--sizes", default="1000,5000,10000")
    parser.add_argument("--poll-interval", type=float, default=30.0)
    parser.add_argument("--window", type=float, default=60.0, help="runs finish at random times in this window")
    parser.add_argument("--upload-mib", type=int, default=1024)
    parser.add_argument("--upload-rounds", type=int, default=uploads.ROUNDS, help="uploads per client, taking turns")
    parser.add_argument("--economy-runs", type=int, default=1000)
    parser.add_argument("--economy-limit", type=float, default=5.0)
    parser.add_argument("--extend-runs", type=int, default=10_000)
    parser.add_argument("--extend-limit", type=float, default=5.0)
    parser.add_argument("--extend-interval", type=float, default=30.0)
    parser.add_argument("--extend-offset", type=float, help="runs start finishing after this (default: 1.25 N / limit)")
    parser.add_argument("--extend-window", type=float, help="and finish at random over this (default: 2 N / limit)")
    parser.add_argument("--real-sizes", default="1000,10000", help="deferred tasks in the real triggerer")
    parser.add_argument("--real-platforms", default="tableflow,extend")
    parser.add_argument("--real-upto", type=int, default=20, help="up to this N the operator really defers")
    parser.add_argument(
        "--real-db", choices=DATABASES, default="postgres", help="the real triggerer's metadata database"
    )
    parser.add_argument("--body-polls", type=int, default=200, help="polls per variant and round (body reading)")
    parser.add_argument("--backfill-sizes", default="10000", help="documents of each batch backfill")
    parser.add_argument("--backfill-mapped-size", type=int, default=1000, help="documents of the mapped one (0: none)")
    parser.add_argument("--backfill-platforms", default="tableflow,extend")
    parser.add_argument(
        "--backfill-limit", type=float, help="the emulator's requests/s and the connection's (default: no limit)"
    )
    parser.add_argument("--only", default="density,uploads,economy,extend,real_triggerer,body_reading,backfill")
    args = parser.parse_args(argv)
    chosen = set(args.only.split(","))
    print(f"machine: {machine()}")
    signal.signal(signal.SIGTERM, interrupt)  # so a stopped run still stops its Airflow and PostgreSQL
    with emulator() as emu:
        if "density" in chosen:
            rows = trigger_density.run(emu, [int(n) for n in args.sizes.split(",")], args.poll_interval, args.window)
            ratios = trigger_density.ratios(rows)
            print("\n1. trigger density (HTTPS on loopback)\n" + table(rows, DENSITY_COLUMNS))
            print("\nratios\n" + table(ratios, list(ratios[0])))
            write_result("trigger_density", {"machine": machine(), "rows": rows, "ratios": ratios})
            picture = plot(rows, RESULTS / "trigger_density.png")
            print(f"plot: {picture or 'matplotlib not installed'}")
        if "uploads" in chosen:
            with tempfile.TemporaryDirectory(prefix="flowruns-bench-upload-") as tmp:
                rows = uploads.run(emu, args.upload_mib, Path(tmp), args.upload_rounds)
            columns = ["client", "size_mib", "rounds", "wall_s", "mib_per_s", "rss_growth_mib"]
            print("\n2. uploads (medians over the rounds)\n" + table(rows, columns))
            ratio = uploads.throughput_ratio(rows)
            if ratio is not None:
                print(f"provider / curl throughput: {ratio:.2f}x")
            write_result("uploads", {"machine": machine(), "rows": rows, "provider_over_curl": ratio})
        if "economy" in chosen:
            row = request_economy.run(emu, args.economy_runs, args.economy_limit, poll_interval=5.0)
            print("\n3. request economy\n" + table([row], list(row)))
            write_result("request_economy", {"machine": machine(), "row": row})
        if "real_triggerer" in chosen:
            with tempfile.TemporaryDirectory(prefix="flowruns-bench-triggerer-") as tmp:
                rows = real_triggerer.run(
                    emu,
                    Path(tmp),
                    args.real_platforms.split(","),
                    [int(n) for n in args.real_sizes.split(",")],
                    args.poll_interval,
                    args.window,
                    args.real_upto,
                    args.real_db,
                )
            print("\n5. inside a real airflow triggerer\n" + table(rows, REAL_COLUMNS))
            for late in (r for r in rows if r["load_s"] > r["first_finish_s"]):
                print(f"warning: {late['trigger']} at {late['n']} loaded after its first runs finished: a short window")
            earlier = RESULTS / "real_triggerer.json"
            rows = real_triggerer.merge(json.loads(earlier.read_text())["rows"] if earlier.exists() else [], rows)
            ratios = real_triggerer.ratios(rows)
            if ratios:
                print("\nratios\n" + table(ratios, list(ratios[0])))
            write_result("real_triggerer", {"machine": machine(), "rows": rows, "ratios": ratios})
        if "body_reading" in chosen:
            measured = body_reading.run(emu, args.body_polls)
            print("\n6. reading answers within max_response_bytes, per poll\n" + table(measured["http"], BODY_COLUMNS))
            print("\ndecoding alone\n" + table(measured["decoding"], list(measured["decoding"][0])))
            write_result("body_reading", {"machine": machine(), "polls": args.body_polls, **measured})
        if "backfill" in chosen:
            run_backfill(emu, args)
    if "extend" in chosen:
        with extend_economy.limited_emulator(args.extend_limit) as emu:
            rows = extend_economy.run(
                emu, args.extend_runs, args.extend_limit, args.extend_interval, args.extend_offset, args.extend_window
            )
        print("\n4. Extend under a limit\n" + table(rows, list(rows[0])))
        write_result("extend_economy", {"machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
