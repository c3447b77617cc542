"""Output files stream to storage: landing two 128 MiB presigned files must not grow the process's memory.

Measured in a separate process: its peak resident size is reset just before the landing
(``benchmarks.peak_memory``; imports peaked higher than the landing would), and the peak reached while landing
is compared with the resident size it started from (no timing involved).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_flowruns.emulator import EmulatorServer
from airflow_flowruns.emulator.config import EmulatorConfig
from airflow_flowruns.platforms.extend.emulator import EXTEND_SPLIT_WORKFLOW, ExtendConfig, ExtendWorkflow
from support.emulator import set_connection

LANDER = """
import json, sys, time
from pathlib import Path
from airflow.sdk import ObjectStoragePath
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.outputs.landing import land_run
from airflow_flowruns.platforms.start import StartRequest
from airflow_flowruns.waiting import OnReview
from benchmarks.peak_memory import peak_kib, reset_peak

hook = FlowRunsHook("extend_memory")
started = hook.start_run(StartRequest(flow_id=sys.argv[2], files={"file": Path(sys.argv[1])}))
run = hook.wait_for_run(None, started.id, deadline=time.time() + 60, poll_interval=0.1, on_review=OnReview.SUCCEED)
before = reset_peak()
landing = land_run(hook, hook.get_run(None, run.id), ObjectStoragePath(sys.argv[3]))
peak = peak_kib()
print(json.dumps({"bytes": landing.bytes, "files": landing.files, "before_kib": before, "peak_kib": peak}))
"""

PART = 128 * 1024 * 1024


@pytest.fixture
def big_files_emulator() -> Iterator[EmulatorServer]:
    workflow = ExtendWorkflow(id=EXTEND_SPLIT_WORKFLOW, name="Big split", steps=["SPLIT"], split_file_bytes=PART)
    with EmulatorServer(EmulatorConfig(extend=ExtendConfig(workflows=[workflow]))) as server:
        yield server


@pytest.mark.integration
def test_landing_256_mib_of_files_keeps_memory_flat(
    big_files_emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = tmp_path / "packet.pdf"
    document.write_bytes(b"%PDF-1.4\n%%EOF\n")
    set_connection(monkeypatch, "extend_memory", "extend", big_files_emulator.url, timeout=120)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-c", LANDER, str(document), EXTEND_SPLIT_WORKFLOW, str(out)],
        env=os.environ.copy(),
        cwd=Path(__file__).parents[1],  # where `benchmarks` imports from
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    growth_mib = (figures["peak_kib"] - figures["before_kib"]) / 1024
    print(f"peak RSS growth landing {2 * PART >> 20} MiB of output files: {growth_mib:.1f} MiB")
    assert figures["files"] == 2 and figures["bytes"] > 2 * PART
    assert growth_mib < 32, f"peak RSS grew by {growth_mib:.0f} MiB while landing {2 * PART >> 20} MiB"
    sizes = sorted(path.stat().st_size for path in out.rglob("files/*/*"))
    assert sizes == [PART, PART]
