"""Uploads stream: a 200 MiB file, local or behind fsspec, must not grow the uploading process's memory.

Measured in a separate process: its peak resident size is reset just before the upload
(``benchmarks.peak_memory``; imports peak higher than an upload should, so ``ru_maxrss`` before and after
would read 0 whatever the upload did), and the peak reached while uploading is read right after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_LARGE_FILE_FLOW
from support.emulator import Emulator, set_connection

UPLOADER = """
import json, sys
from pathlib import Path
from airflow.sdk import ObjectStoragePath
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms.start import StartRequest
from benchmarks.peak_memory import peak_kib, reset_peak

hook = FlowRunsHook("tf_memory")
assert hook.test_connection()[0]
path = ObjectStoragePath(sys.argv[1]) if sys.argv[1].startswith("file://") else Path(sys.argv[1])
request = StartRequest(flow_id=sys.argv[2], files={"document": path})
before = reset_peak()
run = hook.start_run(request)
print(json.dumps({"run": run.id, "before_kib": before, "peak_kib": peak_kib()}))
"""

SIZE = 200 * 1024 * 1024


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["path", "object storage (file://)"])
def test_a_200_mib_upload_keeps_memory_flat(
    kind: str, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "scan.pdf"
    with big.open("wb") as f:
        f.write(b"%PDF-1.4\n")
        f.truncate(SIZE)
    set_connection(monkeypatch, "tf_memory", "tableflow", emulator.url, timeout=120)
    done = subprocess.run(
        [sys.executable, "-c", UPLOADER, str(big) if kind == "path" else big.as_uri(), TABLEFLOW_LARGE_FILE_FLOW],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    growth_mib = (figures["peak_kib"] - figures["before_kib"]) / 1024
    print(f"peak RSS growth for a {SIZE >> 20} MiB upload ({kind}): {growth_mib:.1f} MiB")
    assert growth_mib < 32, f"peak RSS grew by {growth_mib:.0f} MiB for a {SIZE >> 20} MiB upload ({kind})"
    (run,) = emulator.runs()
    assert run["id"] == figures["run"] and run["files"][0]["size"] == SIZE
