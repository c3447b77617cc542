"""Uploads stream from disk: a 200 MB file must not grow the uploading process's memory.

Measured as the peak RSS of a separate process before and after the upload (no timing involved).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_flowruns.emulator.config import TABLEFLOW_LARGE_FILE_FLOW
from conftest import Emulator, set_connection

UPLOADER = """
import json, resource, sys
from pathlib import Path
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms import StartRequest

hook = FlowRunsHook("tf_memory")
assert hook.test_connection()[0]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
run = hook.start_run(StartRequest(flow_id=sys.argv[2], files={"document": Path(sys.argv[1])}))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"run": run.id, "before_kib": before, "after_kib": after}))
"""

SIZE = 200 * 1024 * 1024


@pytest.mark.slow
def test_200_mb_upload_keeps_memory_flat(emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "scan.pdf"
    with big.open("wb") as f:
        f.write(b"%PDF-1.4\n")
        f.truncate(SIZE)
    set_connection(monkeypatch, "tf_memory", "tableflow", emulator.url, timeout=120)
    done = subprocess.run(
        [sys.executable, "-c", UPLOADER, str(big), TABLEFLOW_LARGE_FILE_FLOW],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    growth_mib = (figures["after_kib"] - figures["before_kib"]) / 1024
    print(f"peak RSS growth for a {SIZE >> 20} MiB upload: {growth_mib:.1f} MiB")
    assert growth_mib < 32, f"peak RSS grew by {growth_mib:.0f} MiB for a {SIZE >> 20} MiB upload"
    (run,) = emulator.runs()
    assert run["id"] == figures["run"] and run["files"][0]["size"] == SIZE
