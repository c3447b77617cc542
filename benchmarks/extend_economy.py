"""Benchmark 4: Extend under a rate limit, the change feed beside one read per poll, in the same run.

The emulator runs with two API keys, each limited to ``limit`` requests per second (a token bucket
answering 429 beyond it), over HTTPS on loopback. Two sets of N runs are started together, one per key,
and followed at the same time in one event loop: one set by the provider's trigger as it ships (its
polls answered by the connection's change feed), the other by a trigger whose every poll reads its run.
Neither connection sets ``max_requests_per_second``: each learns the limit from the 429s.

The runs finish at random over ``window`` seconds after ``offset``. The change feed reads each run on
its own twice (its first poll, and the final read the XCom needs), so following N runs costs at least
2N reads of the budget; the default offset and window give those reads the time the limit allows
(N / limit seconds each), so what is measured is what the feed adds on top: how fast it sees a change.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from airflow_flowruns.client.async_client import AsyncFlowRunsClient
from airflow_flowruns.client.ratelimit import MAX_PAUSE_SECONDS, RequestScheduler, scheduler_for
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms.base import FlowRun
from airflow_flowruns.platforms.extend.emulator import EXTEND_INVOICE_WORKFLOW
from airflow_flowruns.triggers.flow_run import FlowRunTrigger
from benchmarks.common import Emulator, emulator, percentile

KEYS = {"change-feed": "feed-key", "one-read-per-poll": "reads-key"}
FIRST_MINUTE = 60.0
_runs = itertools.count()


class FeedTrigger(FlowRunTrigger):
    """The provider's trigger as it ships; its polls are answered by the connection's change feed."""


class ReadPerPollTrigger(FlowRunTrigger):
    """The provider's trigger reading its run on every poll, first polls spread over the interval, as
    every Extend poll did before the feed."""

    def polls_by_listing(self) -> bool:
        return False

    async def fetch_run(self, client: AsyncFlowRunsClient) -> FlowRun:
        return await client.read_run(self.flow_id, self.run_id)


TRIGGERS: dict[str, type[FlowRunTrigger]] = {"change-feed": FeedTrigger, "one-read-per-poll": ReadPerPollTrigger}


class AnswerLog:
    """Every answer one connection's scheduler saw (when, and its status), counted client-side: the two
    connections share the emulator, which does not tell their requests apart."""

    answered: ClassVar[dict[str, list[tuple[float, int]]]] = {}

    @classmethod
    def watch(cls, kind: str, scheduler: RequestScheduler) -> None:
        log = cls.answered[kind] = []
        learn = scheduler.answered

        def answered(status: int, retry_after: float | None, cap: float = MAX_PAUSE_SECONDS) -> None:
            log.append((time.monotonic(), status))
            learn(status, retry_after, cap)

        scheduler.answered = answered  # type: ignore[method-assign]


@contextmanager
def limited_emulator(limit: float) -> Iterator[Emulator]:
    """An emulator of its own, with one API key per trigger kind, each limited to ``limit`` requests/s."""
    with (
        emulator_config(list(KEYS.values())) as config,
        emulator("--config", str(config), "--rate-limit", str(limit)) as emu,
    ):
        yield emu


@contextmanager
def emulator_config(keys: list[str]) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="flowruns-bench-extend-") as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps({"api_keys": keys}))
        yield path


async def _follow(trigger: FlowRunTrigger, fired: dict[str, tuple[float, str]]) -> None:
    async for event in trigger.run():
        fired[event.payload["run_id"]] = (time.time(), event.payload["outcome"])
        return


def run(
    emu: Emulator,
    runs: int,
    limit: float,
    poll_interval: float,
    offset: float | None = None,
    window: float | None = None,
) -> list[dict[str, Any]]:
    offset = runs / limit * 1.25 if offset is None else offset
    window = runs / limit * 2 if window is None else window
    ids: dict[str, list[str]] = {}
    triggers: list[FlowRunTrigger] = []
    deadline = time.time() + offset + window + 10 * poll_interval
    AnswerLog.answered.clear()
    for kind, cls in TRIGGERS.items():
        # A connection of its own per run: the rate each learns lives in the process's scheduler for it.
        conn_id = emu.connect(
            f"bench_extend_{kind.replace('-', '_')}_{next(_runs)}", "extend", KEYS[kind], max_retries=10
        )
        AnswerLog.watch(kind, scheduler_for(conn_id, None))
        ids[kind] = emu.seed(
            EXTEND_INVOICE_WORKFLOW,
            runs,
            platform="extend",
            queued_seconds=0,
            processing_seconds=offset,
            processing_jitter_seconds=window,
        )
        triggers += [
            cls(
                conn_id=conn_id,
                platform="extend",
                flow_id=EXTEND_INVOICE_WORKFLOW,
                run_id=run_id,
                deadline=deadline,
                poll_interval=poll_interval,
            )
            for run_id in ids[kind]
        ]
    fired: dict[str, tuple[float, str]] = {}
    start, cpu0 = time.monotonic(), time.process_time()

    async def follow_all() -> None:
        try:
            await asyncio.gather(*(_follow(trigger, fired) for trigger in triggers))
        finally:
            await FlowRunsHook.close_async_clients()

    asyncio.run(follow_all())
    wall, cpu = time.monotonic() - start, time.process_time() - cpu0
    finished = {run["id"]: run["finished_at"] for run in emu.runs()}
    rows = []
    for kind, mine in ids.items():
        answers = AnswerLog.answered[kind]
        settled = [i for i in mine if fired.get(i, (0.0, ""))[1] == "settled"]
        latencies = sorted(fired[i][0] - finished[i] for i in settled if finished.get(i))
        limited = [t for t, status in answers if status == 429]
        rows.append(
            {
                "trigger": kind,
                "runs": runs,
                "limit_per_s": limit,
                "interval_s": poll_interval,
                "events": len(settled),
                "failed_triggers": runs - len(settled),
                "http_429": len(limited),
                "http_429_after_first_minute": sum(t - start > FIRST_MINUTE for t in limited),
                "requests": len(answers),
                "requests_per_run": len(answers) / runs,
                "detection_p50_s": percentile(latencies, 50),
                "detection_p99_s": percentile(latencies, 99),
                "detection_max_s": latencies[-1] if latencies else float("nan"),
                "finish_offset_s": offset,
                "finish_window_s": window,
                "wall_s": wall,
                "process_cores_both_kinds": cpu / wall,
            }
        )
    return rows
