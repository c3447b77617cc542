"""The backfill benchmark's own measuring: CPU of processes that live between two samples, and runs counted per
document. The benchmark itself starts Airflow (minutes); ``python -m benchmarks --only backfill`` runs it."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.backfill import runs_per_document
from benchmarks.backfill_stack import ProcessMeter
from e2e.stack import Stack

FORKING_ROOT = """
import os, sys, time
from pathlib import Path

def burn(seconds):
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass

for i in range(30):
    child = os.fork()
    if child == 0:
        if i % 3 == 0:  # a grandchild too, reaped by the child
            grandchild = os.fork()
            if grandchild == 0:
                burn(0.02)
                os._exit(0)
            os.waitpid(grandchild, 0)
        burn(0.02)
        os._exit(0)
    os.waitpid(child, 0)
    time.sleep(0.01)
Path(sys.argv[1]).touch()
while not Path(sys.argv[2]).exists():
    time.sleep(0.05)
"""


@pytest.mark.integration
def test_process_meter_counts_children_that_lived_between_two_samples(tmp_path: Path) -> None:
    """Forty short-lived processes, most of them born and reaped between two samples 0.5 s apart: the meter's
    total while the root lives matches the CPU the operating system reports for the whole tree once it ended."""
    stack = Stack(tmp_path, parallelism=1)
    meter = ProcessMeter(stack)
    done, stop = tmp_path / "done", tmp_path / "stop"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    root = stack.start("scheduler", [sys.executable, "-c", FORKING_ROOT, str(done), str(stop)])
    try:
        while not done.exists():
            meter.sample()
            time.sleep(0.5)
        meter.sample()
        measured = meter.total()
    finally:
        stop.touch()
        root.wait(timeout=30)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    truth = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    children_alone = 40 * 0.02
    assert truth > children_alone
    assert measured == pytest.approx(truth, abs=0.1), "children that lived between samples were left out"


def _run(run_id: str, created: float, status: str, **metadata: Any) -> dict[str, Any]:
    history = [["processing", created], *([[status, created + 1]] if status != "processing" else [])]
    return {
        "platform": "tableflow",
        "id": run_id,
        "status": status,
        "created_at": created,
        "history": history,
        "metadata": metadata,
    }


def test_runs_per_document_groups_by_document_key_or_task_key_oldest_first() -> None:
    runs = [
        _run("b", 2.0, "processing", airflow_document_key="2024/a.pdf", airflow_task_key="af-1.aa"),
        _run("a", 1.0, "failed", airflow_document_key="2024/a.pdf", airflow_task_key="af-1.aa"),
        _run("c", 1.5, "completed", airflow_task_key="mapped-3"),
        _run("d", 1.7, "completed"),
    ]
    by_document = runs_per_document(runs)
    assert {key: [run.id for run in found] for key, found in by_document.items()} == {
        "2024/a.pdf": ["a", "b"],
        "mapped-3": ["c"],
    }
    assert [run.phase for run in by_document["2024/a.pdf"]] == ["failed", "running"]
