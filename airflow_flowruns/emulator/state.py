"""The emulator's memory: runs and how they progress, the request log, and scripted faults.

A run's status is computed when it is read, from the time elapsed since it was created and its flow's
scenario, so nothing ticks in the background. The control API can force a status at any moment; from
then on the run follows only what was forced.
"""

from __future__ import annotations

import random
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_flowruns.emulator.config import Scenario
from airflow_flowruns.emulator.faults import FaultInjector, FaultKind, FaultMode
from airflow_flowruns.emulator.ratelimit import TokenBuckets

_ALPHABET = string.ascii_letters + string.digits


def new_id(length: int = 16) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


@dataclass(frozen=True)
class Entry:
    """One status a run entered: raw platform status, wall-clock time, message and error."""

    status: str
    time: float
    message: str | None = None
    error: str | None = None


REQUEST_LOG_SIZE = 100_000
"""The log keeps the newest requests only, so a long benchmark does not grow the emulator without bound."""

PHASES = ("queued", "running", "review", "completed", "failed")


class EmulatedRun:
    """A run of any platform. ``statuses`` maps the emulator's phases to the platform's raw names."""

    def __init__(
        self,
        platform: str,
        run_id: str,
        flow_id: str,
        scenario: Scenario,
        statuses: Mapping[str, str],
        record: dict[str, Any] | None = None,
        created: float | None = None,
    ) -> None:
        self.platform = platform
        self.id = run_id
        self.flow_id = flow_id
        self.scenario = scenario
        self.statuses = statuses
        self.record = record or {}
        now = time.time()
        self.created = now if created is None else created
        self._t0 = time.monotonic() - (now - self.created)
        self._processing = scenario.processing_seconds + random.uniform(0, scenario.processing_jitter_seconds)
        self._frozen: list[Entry] | None = None
        self._pending: list[tuple[float, Entry]] = []

    def _script(self) -> list[tuple[float, Entry]]:
        s, at = self.scenario, 0.0
        script = []
        if s.queued_seconds > 0:
            script.append((0.0, self._entry("queued", 0.0, "Queued")))
            at = s.queued_seconds
        script.append((at, self._entry("running", at, "Processing started")))
        at += self._processing
        if s.review:
            script.append((at, self._entry("review", at, "Waiting for human review")))
            if s.review_seconds is None:
                return script
            at += s.review_seconds
        if s.outcome == "failed":
            error = s.error or "Extraction failed: the document is unreadable"
            script.append((at, self._entry("failed", at, error, error)))
        else:
            script.append((at, self._entry("completed", at, "Completed")))
        return script

    def _entry(self, phase: str, offset: float, message: str, error: str | None = None) -> Entry:
        return Entry(self.statuses[phase], self.created + offset, message, error)

    def history(self) -> list[Entry]:
        now = time.monotonic()
        if self._frozen is None:
            elapsed = now - self._t0
            return [entry for offset, entry in self._script() if offset <= elapsed]
        return self._frozen + [entry for due, entry in self._pending if due <= now]

    @property
    def status(self) -> str:
        return self.history()[-1].status

    @property
    def error(self) -> str | None:
        return next((e.error for e in reversed(self.history()) if e.error), None)

    def force(self, status: str, *, error: str | None = None, message: str | None = None, after: float = 0.0) -> None:
        """Move the run to ``status`` now (or ``after`` seconds); scripted progression stops here."""
        if self._frozen is None:
            self._frozen = self.history()
        else:
            now = time.monotonic()
            self._frozen += [entry for due, entry in self._pending if due <= now]
            self._pending = [(due, entry) for due, entry in self._pending if due > now]
        entry = Entry(status, time.time() + after, message or f"Status set to {status}", error)
        self._pending.append((time.monotonic() + after, entry))

    def finished_at(self) -> float | None:
        """When the scripted run reached its outcome (unix seconds, not rounded), for latency figures."""
        final = {self.statuses["completed"], self.statuses["failed"]}
        last = self.history()[-1]
        return last.time if last.status in final else None

    def summary(self) -> dict[str, Any]:
        """The control API's record of the run; ``history`` ([raw status, unix time], oldest first) tells when it
        ended however it ended, cancelled or rejected included, which ``finished_at`` does not."""
        history = self.history()
        return {
            "platform": self.platform,
            "id": self.id,
            "flow_id": self.flow_id,
            "status": history[-1].status,
            "created_at": self.created,
            "finished_at": self.finished_at(),
            "history": [[entry.status, entry.time] for entry in history],
            **self.record,
        }


@dataclass
class Fault:
    """A scripted answer for the next ``count`` API requests that match method and path prefix."""

    path: str
    status: int
    body: str = ""
    method: str | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    count: int = 1
    kind: FaultKind | None = None
    """A fault-mode kind (e.g. ``drop`` after the route ran) instead of the scripted status and body."""

    def matches(self, method: str, path: str) -> bool:
        return self.count > 0 and path.startswith(self.path) and self.method in (None, method)


class EmulatorState:
    """Everything the routes share; guarded by one lock because uvicorn may run handlers concurrently."""

    def __init__(
        self,
        scenarios: Mapping[tuple[str, str], Scenario],
        fault_mode: FaultMode | None = None,
        rate_limit: float | None = None,
    ) -> None:
        self.lock = threading.Lock()
        self._configured = dict(scenarios)
        self.scenarios: dict[tuple[str, str], Scenario] = dict(scenarios)
        self.runs: dict[str, EmulatedRun] = {}
        self.uploads: dict[str, dict[str, Any]] = {}
        """Files uploaded on their own (Extend, Noxus, StackAI), by id: name and size, never the content."""
        self.tokens: dict[str, float] = {}
        """OAuth access tokens issued, with their expiry (unix seconds)."""
        self.requests: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
        self.request_count = 0
        self.faults: list[Fault] = []
        self._fault_mode = fault_mode or FaultMode()
        self.injector = FaultInjector(self._fault_mode)
        self._rate_limit = rate_limit
        self.buckets = TokenBuckets(rate_limit)
        self.connections: set[tuple[str, int]] = set()
        """Client (host, port) pairs seen: each is one TCP connection the clients opened."""

    def reset(self) -> None:
        with self.lock:
            self.scenarios = dict(self._configured)
            self.runs.clear()
            self.uploads.clear()
            self.tokens.clear()
            self.requests.clear()
            self.request_count = 0
            self.faults.clear()
            self.connections.clear()
            self.injector.counts.clear()
            self.injector.set_mode(self._fault_mode)
            self.buckets.set_rate(self._rate_limit)
            self.buckets.limited = 0

    def add_run(self, run: EmulatedRun) -> EmulatedRun:
        with self.lock:
            self.runs[run.id] = run
        return run

    def log_request(self, entry: dict[str, Any], client: tuple[str, int] | None) -> None:
        with self.lock:
            self.requests.append(entry)
            self.request_count += 1
            if client is not None:
                self.connections.add(client)

    def runs_of(self, platform: str, flow_id: str | None = None) -> list[EmulatedRun]:
        """Newest first, as the platforms list them."""
        with self.lock:
            found = [r for r in self.runs.values() if r.platform == platform and flow_id in (None, r.flow_id)]
        return sorted(found, key=lambda run: run.created, reverse=True)

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.count -= 1
                    return fault
        return None
