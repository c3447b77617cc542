"""The worker kill of ``make e2e``: a task's processes killed right after its start call reached the platform,
before the task could defer, so only a later try can follow the run it started."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import httpx
import psutil

from airflow_flowruns.platforms.start import TASK_KEY_FIELD
from e2e.stack import AirflowApi

HAND_OFF_SETTLE_SECONDS = 3.0


class MappedTask(NamedTuple):
    """The mapped task whose workers may be killed."""

    dag_id: str
    task_id: str
    run_id: str


@dataclass
class WorkerKill:
    map_index: int
    run_id: str
    pids: list[int]
    after_seconds: float
    """From the moment the killer saw the run on the emulator to the SIGKILL."""


class WorkerKiller(threading.Thread):
    """Watches the emulator for new runs and kills the first worker still alive right after its start call.

    A deferrable task leaves its worker a moment after the start call returns, so the killer polls fast
    and tries again with the next new run until one kill lands. Airflow names a task's processes after
    the task instance id (``airflow worker -- <id>`` for the task, ``... LocalExecutor: <id>`` for its
    supervisor); the ids of running first tries come from the REST API, refreshed continuously.
    """

    def __init__(
        self, emulator: httpx.Client, api: AirflowApi, scheduler_pid: int, keys: Mapping[str, int], task: MappedTask
    ) -> None:
        super().__init__(name="worker-killer", daemon=True)
        self.task = task
        self.emulator = emulator
        self.api = api
        self.scheduler = psutil.Process(scheduler_pid)
        self.map_index_of = keys
        self.stopping = threading.Event()
        self.kill: WorkerKill | None = None
        self.missed: Counter[str] = Counter()
        self.error: BaseException | None = None
        self._running: dict[int, str] = {}

    def run(self) -> None:
        try:
            self._watch()
        except BaseException as exc:
            self.error = exc

    def _watch(self) -> None:
        seen: set[str] = set()
        refreshed = 0.0
        while not self.stopping.is_set() and self.kill is None:
            if time.monotonic() - refreshed > 0.3:
                self._refresh()
                refreshed = time.monotonic()
            if self.emulator.get("/stats").json()["runs"] > len(seen):
                for run in self.emulator.get("/runs").json():
                    if run["id"] not in seen:
                        seen.add(run["id"])
                        self._spotted(run, time.monotonic())
            time.sleep(0.02)

    def _refresh(self) -> None:
        """Task instance id of every mapped task running its first try, by map index."""
        found = self.api.call(
            "GET",
            f"/dags/{self.task.dag_id}/dagRuns/{self.task.run_id}/taskInstances",
            task_id=self.task.task_id,
            state="running",
            limit=1000,
        )
        self._running = {ti["map_index"]: ti["id"] for ti in found["task_instances"] if ti["try_number"] == 1}

    def _spotted(self, run: dict[str, Any], spotted: float) -> None:
        index = self.map_index_of.get((run.get("metadata") or {}).get(TASK_KEY_FIELD, ""))
        if self.kill is not None or index is None:
            return
        if index not in self._running:
            self._refresh()
        ti_id = self._running.get(index)
        if ti_id is None:
            self.missed["not running a first try"] += 1
            return
        task = next((p for p in self._processes() if _title(p) == f"airflow worker -- {ti_id}"), None)
        try:
            supervisor = task.parent() if task else None
            if task is None or supervisor is None or not _title(supervisor).endswith(f"LocalExecutor: {ti_id}"):
                self.missed["task process gone"] += 1
                return
            task.kill()
            supervisor.kill()
        except psutil.NoSuchProcess:
            self.missed["task process gone"] += 1
            return
        killed_after = time.monotonic() - spotted
        if not self._killed_before_hand_off(index, task.pid):
            self.missed["deferral recorded before the kill"] += 1
            return
        self.kill = WorkerKill(index, run["id"], [task.pid, supervisor.pid], killed_after)

    def _killed_before_hand_off(self, index: int, task_pid: int) -> bool:
        """Whether the killed try is still ``running`` in Airflow, under the killed process.

        The supervisor may have told the API server the task deferred in the milliseconds between the run
        appearing and the kill; such a task resumes from its trigger in the same try and is no test of
        the retry. A request the supervisor had in flight when killed is answered within this wait.
        """
        time.sleep(HAND_OFF_SETTLE_SECONDS)
        dag_id, task_id, run_id = self.task
        ti = self.api.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{index}")
        return ti["state"] == "running" and ti["try_number"] == 1 and ti["pid"] == task_pid

    def _processes(self) -> list[psutil.Process]:
        try:
            return self.scheduler.children(recursive=True)
        except psutil.NoSuchProcess:
            return []


def _title(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline()).strip()  # setproctitle pads the title with empty arguments
    except psutil.Error:
        return ""
