"""Benchmark 2: a large file through the provider's upload path versus `curl -F`, to the same endpoint.

Each upload runs in a subprocess of its own so its peak RSS is its own: the provider's peak is reset
just before the upload (``benchmarks.peak_memory``), curl's is that of a fresh process. Throughput is
size / wall time.

The emulator, not the client, bounds both uploads, and its cost per byte swings by 2x from one upload
to the next on a small machine (how far it falls behind decides how large and how cache-cold its TLS
reads are). So the file is on disk before the first upload (no writeback of it under either client), one untimed
upload warms the emulator, the two clients take turns in alternating order, and each client's figure
is its median over the rounds.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_LARGE_FILE_FLOW
from benchmarks.common import API_KEY, Emulator

ROUNDS = 3

PROVIDER_UPLOAD = """
import json, sys, time
from pathlib import Path
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms.start import StartRequest
from benchmarks.peak_memory import peak_kib, reset_peak

hook = FlowRunsHook("bench_upload")
hook.test_connection()
rss = reset_peak()  # imports peaked higher than the upload will
start = time.monotonic()
hook.start_run(StartRequest(flow_id=sys.argv[2], files={"document": Path(sys.argv[1])}))
wall = time.monotonic() - start
print(json.dumps({"wall_s": wall, "rss_before_kib": rss, "rss_peak_kib": peak_kib()}))
"""

CURL_UPLOAD = """
import json, resource, subprocess, sys, time
start = time.monotonic()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
wall = time.monotonic() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"wall_s": wall, "rss_before_kib": 0, "rss_peak_kib": peak}))
"""


def _measure(args: list[str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        cwd=Path(__file__).parents[1],  # where `benchmarks` imports from
        check=True,
        timeout=1800,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(emulator: Emulator, size_mib: int, folder: Path, rounds: int = ROUNDS) -> list[dict[str, Any]]:
    path = folder / "scan.pdf"
    header, chunk = b"%PDF-1.4\n", os.urandom(1024 * 1024)
    with path.open("wb") as f:  # real bytes, not a sparse file, so both clients read the same disk data
        f.write(header)  # exactly size_mib MiB in all: the large-file flow accepts up to 1 GiB
        for index in range(size_mib):
            f.write(chunk if index < size_mib - 1 else chunk[len(header) :])
        f.flush()
        os.fsync(f.fileno())
    emulator.connect("bench_upload", timeout=600)
    clients = {"provider": [PROVIDER_UPLOAD, str(path), TABLEFLOW_LARGE_FILE_FLOW]}
    curl = shutil.which("curl")
    if curl:
        clients["curl -F"] = [CURL_UPLOAD, *_curl_command(curl, emulator, path)]
    _measure(clients["provider"])  # untimed: the emulator's first gigabyte is slower than any later one
    measured: dict[str, list[dict[str, Any]]] = {client: [] for client in clients}
    for turn in range(rounds):
        order = list(clients) if turn % 2 == 0 else list(reversed(clients))
        for client in order:
            measured[client].append(_measure(clients[client]))
    size = path.stat().st_size
    path.unlink()
    return [_summary(client, uploads, size) for client, uploads in measured.items()]


def _curl_command(curl: str, emulator: Emulator, path: Path) -> list[str]:
    return [
        curl,
        "-sS",
        "--fail",
        "--cacert",
        str(emulator.cert),
        "-H",
        f"Authorization: Bearer {API_KEY}",
        "-F",
        f"document=@{path};type=application/pdf",
        f"{emulator.url}/v2/flows/{TABLEFLOW_LARGE_FILE_FLOW}/run",
    ]


def _summary(client: str, uploads: list[dict[str, Any]], size: int) -> dict[str, Any]:
    """Median throughput over the rounds; the largest RSS growth of any round."""
    size_mib = size / 2**20
    each = [size_mib / upload["wall_s"] for upload in uploads]
    return {
        "client": client,
        "size_mib": size_mib,
        "rounds": len(uploads),
        "wall_s": statistics.median(upload["wall_s"] for upload in uploads),
        "mib_per_s": statistics.median(each),
        "mib_per_s_each": each,
        "rss_growth_mib": max((u["rss_peak_kib"] - u["rss_before_kib"]) / 1024 for u in uploads),
    }


def throughput_ratio(rows: list[dict[str, Any]]) -> float | None:
    """The provider's median throughput over curl's; None where curl is not installed."""
    by_client = {row["client"]: row["mib_per_s"] for row in rows}
    return by_client["provider"] / by_client["curl -F"] if "curl -F" in by_client else None
