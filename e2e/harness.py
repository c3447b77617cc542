"""What every end-to-end scenario shares: its outcome, its options, how it is conducted and its stack
stopped, the emulator it starts, and the scan for the API key."""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from e2e.secret_scan import Findings, scan_json, scan_sqlite, scan_tree
from e2e.stack import BIN, E2EError, Stack, wait_for


@dataclass
class Outcome:
    figures: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def figure(self, text: str) -> None:
        self.figures.append(text)

    def require(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)


class Scenario(Protocol):
    """What ``conduct`` runs: a scenario with its figures and problems, timed from ``started``."""

    outcome: Outcome
    started: float

    def run(self) -> bool: ...


def conduct(name: str, scenario: Scenario, stack: Stack, args: argparse.Namespace) -> int:
    """Run a scenario on its stack, always stop the stack, print figures and problems, and keep the folder
    of a failed run (or of any run with ``--keep``)."""
    print(f"{name} seed {args.seed}; working in {stack.root}", flush=True)
    signal.signal(signal.SIGTERM, interrupt)
    ok = False
    try:
        ok = scenario.run()
    except (E2EError, KeyboardInterrupt) as exc:
        scenario.outcome.problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        stack.stop()
    print("\n".join(["", f"{name} figures:", *(f"  {line}" for line in scenario.outcome.figures)]))
    if scenario.outcome.problems:
        print("\n".join(["", f"{name} FAILED:", *(f"  - {line}" for line in scenario.outcome.problems)]))
    print(f"\n{name} {'passed' if ok else 'failed'} in {time.monotonic() - scenario.started:.0f} s (seed {args.seed})")
    if ok and not args.keep:
        shutil.rmtree(stack.root, ignore_errors=True)
    else:
        print(f"kept {stack.root}")
    return 0 if ok else 1


def common_arguments(parser: argparse.ArgumentParser, *, fault_rate: float) -> None:
    """The options every e2e scenario takes: the emulator's fault rate, the seed, and whether to keep the folder."""
    parser.add_argument("--fault-rate", type=float, default=fault_rate, help="share of API requests the emulator fails")
    parser.add_argument("--seed", type=int, default=random.randrange(1_000_000))
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder even after a clean run")


def scan_for_key(
    out: Outcome,
    key: str,
    stack: Stack,
    runs: list[dict[str, Any]],
    requests: list[dict[str, Any]],
    trigger_findings: Findings,
    folders: tuple[Path, ...] = (),
) -> None:
    """The key, everywhere: Airflow's home (logs, database), process output, the emulator's logs, ``folders``;
    ``trigger_findings`` holds what scans of the trigger table found while triggers ran."""
    some_run = runs[0]["id"] if runs else "no-run"
    findings = Findings(key, controls=(some_run,))
    for folder in (stack.home, stack.procs, *folders):
        scan_tree(findings, folder)
    scan_sqlite(findings, stack.home / "airflow.db", fernet_key=stack.fernet_key)
    scan_json(findings, "emulator request log", requests, "emulator requests")
    scan_json(findings, "emulator runs", runs, "emulator runs")
    out.figure(f"secret scan of Airflow's home, process output and emulator logs: {findings.summary()}")
    out.figure(f"secret scan of trigger kwargs while triggers ran: {trigger_findings.summary()}")
    out.require(not findings.hits and not trigger_findings.hits, "the API key was found (see above)")
    out.require(trigger_findings.control_hits["poll_interval"] > 0, "no trigger kwargs were read in clear")
    out.require(findings.control_hits[some_run] > 0, f"the scan never saw run id {some_run}: it read the wrong places")


def start_emulator(stack: Stack, key: str, options: list[str]) -> str:
    """Start the emulator on a free port, accepting only ``key``, and return its URL once it listens."""
    config = stack.root / "emulator.json"
    config.write_text(json.dumps({"api_keys": [key]}))
    argv = [str(BIN / "flowruns-emulator"), "--host", "127.0.0.1", "--port", "0", "--config", str(config), *options]
    stack.start("emulator", argv)
    log = stack.procs / "emulator.log"

    def listening() -> str | None:
        stack.check_alive()
        found = re.search(r"listening on (\S+)", log.read_text()) if log.exists() else None
        return found.group(1) if found else None

    return wait_for("the emulator", listening, timeout=30, interval=0.1)


def counts(counter: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counter.items())) or "none"


def interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
