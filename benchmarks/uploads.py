"""Benchmark 2: a large file through the provider's upload path versus `curl -F`, to the same endpoint.

Each upload runs in a subprocess of its own so its peak RSS is its own: the provider's peak is reset
just before the upload (``/proc/self/clear_refs``), curl's is that of a fresh process. Throughput is
size / wall time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from airflow_flowruns.emulator.config import TABLEFLOW_LARGE_FILE_FLOW
from benchmarks.common import API_KEY, Emulator

PROVIDER_UPLOAD = """
import json, sys, time
from pathlib import Path
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms import StartRequest

def status_kib(field):
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith(field)).split()[1])

hook = FlowRunsHook("bench_upload")
hook.test_connection()
with open("/proc/self/clear_refs", "w") as refs:  # reset the peak (VmHWM): imports peaked higher than now
    refs.write("5")
rss = status_kib("VmRSS")
start = time.monotonic()
hook.start_run(StartRequest(flow_id=sys.argv[2], files={"document": Path(sys.argv[1])}))
wall = time.monotonic() - start
print(json.dumps({"wall_s": wall, "rss_before_kib": rss, "rss_peak_kib": status_kib("VmHWM")}))
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
        [sys.executable, "-c", *args], capture_output=True, text=True, env=os.environ.copy(), check=True, timeout=1800
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(emulator: Emulator, size_mib: int, folder: Path) -> list[dict[str, Any]]:
    path = folder / "scan.pdf"
    header, chunk = b"%PDF-1.4\n", os.urandom(1024 * 1024)
    with path.open("wb") as f:  # real bytes, not a sparse file, so both clients read the same disk data
        f.write(header)  # exactly size_mib MiB in all: the large-file flow accepts up to 1 GiB
        for index in range(size_mib):
            f.write(chunk if index < size_mib - 1 else chunk[len(header) :])
    emulator.connect("bench_upload", timeout=600)
    rows = []
    provider = _measure([PROVIDER_UPLOAD, str(path), TABLEFLOW_LARGE_FILE_FLOW])
    rows.append({"client": "provider", **provider})
    curl = shutil.which("curl")
    if curl:
        command = [
            curl,
            "-sS",
            "--fail",
            "--cacert",
            str(emulator.cert),
            "-H",
            f"Authorization: Bearer {API_KEY}",
            "-F",
            f"document=@{path};type=application/pdf",
            f"{emulator.url}/flows/{TABLEFLOW_LARGE_FILE_FLOW}/run",
        ]
        rows.append({"client": "curl -F", **_measure([CURL_UPLOAD, *command])})
    size = path.stat().st_size
    for row in rows:
        row["size_mib"] = size / 2**20
        row["mib_per_s"] = size / 2**20 / row["wall_s"]
        row["rss_growth_mib"] = (row["rss_peak_kib"] - row["rss_before_kib"]) / 1024
    path.unlink()
    return rows
