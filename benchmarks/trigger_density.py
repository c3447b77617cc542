"""Benchmark 1: N FlowRunTriggers in one event loop, as the triggerer runs them, against a TLS emulator.

The same workload runs twice in the same process: with the provider's shared client, and with a baseline
trigger that opens a new HTTP session for every poll (the pattern of the dbt Cloud and Fivetran-async
providers). Figures: CPU per 1,000 polls, cores used, peak RSS per trigger, event-loop lag, TCP
connections opened, requests per run, detection latency (run finished → event yielded).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import random
import ssl
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import aiohttp

from airflow_flowruns.client import HttpOptions
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms.base import FlowRun
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_RECONCILIATION_FLOW
from airflow_flowruns.triggers.flow_run import FlowRunTrigger
from benchmarks.common import Emulator, percentile

POOL_SLOTS = 32


class ProviderTrigger(FlowRunTrigger):
    """The provider's trigger as it ships, counting its polls (a poll: one trigger asking for its run's state)."""

    polls: ClassVar[int] = 0

    async def poll(self) -> FlowRun:
        ProviderTrigger.polls += 1
        return await self.read()

    async def read(self) -> FlowRun:
        return await super().poll()


class ReadsAloneTrigger(ProviderTrigger):
    """A trigger whose polls each read their own run: it spreads its first poll over the interval, as the
    provider's trigger does on platforms without a poll listing, instead of polling in step."""

    def polls_by_listing(self) -> bool:
        return False


class OneReadPerPollTrigger(ReadsAloneTrigger):
    """The provider's trigger with the listing batcher left out: every poll reads its run on the shared client."""

    async def read(self) -> FlowRun:
        client = await FlowRunsHook.get_async_client(self.conn_id)
        return await client.read_run(self.flow_id, self.run_id)


class SessionPerPollTrigger(ReadsAloneTrigger):
    """The baseline: a new aiohttp session, so a new connection and TLS handshake, for every poll.

    That is what the dbt Cloud and Fivetran async hooks do. The TLS context is made once per connection,
    as aiohttp's default context is, so the baseline pays for sessions and handshakes, not for reading
    a CA bundle. Parsing is the provider's own, so only the HTTP pattern differs.
    """

    async def read(self) -> FlowRun:
        shared = await FlowRunsHook.get_async_client(self.conn_id)
        call = shared.platform.get_run_call(self.flow_id, self.run_id)
        assert call is not None
        url = shared.platform.settings.base_url.rstrip("/") + call.path
        connector = aiohttp.TCPConnector(ssl=_tls_context(shared.options))
        session = aiohttp.ClientSession(connector=connector, headers=shared.platform.headers())
        async with session, session.get(url) as response:
            response.raise_for_status()
            return shared.platform.parse_run(await response.json(), self.flow_id)


class NoHttpTrigger(ReadsAloneTrigger):
    """The floor: the same trigger, event loop and parsing, with each answer made in memory.

    Its CPU per poll is what a poll costs when the network costs nothing; what the other triggers
    spend above it is what their HTTP patterns cost.
    """

    finish_times: ClassVar[dict[str, float]] = {}
    body: ClassVar[dict[str, Any]] = {}

    async def read(self) -> FlowRun:
        platform = (await FlowRunsHook.get_async_client(self.conn_id)).platform
        status = "completed" if time.time() >= self.finish_times[self.run_id] else "processing"
        return platform.parse_run({**self.body, "id": self.run_id, "status": status}, self.flow_id)


TRIGGERS: dict[str, type[ProviderTrigger]] = {
    "shared": ProviderTrigger,
    "one-read-per-poll": OneReadPerPollTrigger,
    "session-per-poll": SessionPerPollTrigger,
    "no-http": NoHttpTrigger,
}


@functools.cache
def _tls_context(options: HttpOptions) -> ssl.SSLContext | bool:
    return options.ssl_context()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


async def _follow(trigger: FlowRunTrigger, fired: dict[str, float]) -> None:
    async for event in trigger.run():
        fired[event.payload["run_id"]] = time.time()
        assert event.payload["outcome"] == "settled", event.payload
        return


async def _workload(triggers: Sequence[FlowRunTrigger], heartbeat: float = 0.1) -> dict[str, Any]:
    fired: dict[str, float] = {}
    lags: list[float] = []
    peak_rss = _rss_bytes()
    done = asyncio.Event()

    async def beat() -> None:
        nonlocal peak_rss
        while not done.is_set():
            start = time.monotonic()
            await asyncio.sleep(heartbeat)
            lags.append(time.monotonic() - start - heartbeat)
            peak_rss = max(peak_rss, _rss_bytes())

    watcher = asyncio.create_task(beat())
    await asyncio.gather(*(_follow(trigger, fired) for trigger in triggers))
    done.set()
    await watcher
    await FlowRunsHook.close_async_clients()
    return {"fired": fired, "lags": lags, "peak_rss": peak_rss}


def run_one(emulator: Emulator, kind: str, n: int, poll_interval: float, window: float) -> dict[str, Any]:
    emulator.reset()
    conn_id = emulator.connect(f"bench_{kind}", max_concurrent_requests=POOL_SLOTS, max_retries=8)
    ids = emulator.seed(
        TABLEFLOW_RECONCILIATION_FLOW, n, processing_seconds=poll_interval, processing_jitter_seconds=window
    )
    cls = TRIGGERS[kind]
    deadline = time.time() + poll_interval + window + 10 * poll_interval
    if cls is NoHttpTrigger:
        NoHttpTrigger.body = FlowRunsHook(conn_id).get_run(None, ids[0]).raw
        NoHttpTrigger.finish_times = {i: time.time() + poll_interval + random.uniform(0, window) for i in ids}
    ProviderTrigger.polls = 0
    gc.collect()
    rss_before = _rss_bytes()
    before = emulator.stats()
    cpu0, wall0 = time.process_time(), time.monotonic()
    triggers = [
        cls(
            conn_id=conn_id,
            platform="tableflow",
            flow_id=TABLEFLOW_RECONCILIATION_FLOW,
            run_id=run_id,
            deadline=deadline,
            poll_interval=poll_interval,
        )
        for run_id in ids
    ]
    result = asyncio.run(_workload(triggers))
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    after = emulator.stats()
    if cls is NoHttpTrigger:
        finished = NoHttpTrigger.finish_times
    else:
        finished = {run["id"]: run["finished_at"] for run in emulator.runs()}
    polls, requests = ProviderTrigger.polls, after["requests"] - before["requests"]
    latencies = sorted(result["fired"][i] - finished[i] for i in ids if finished.get(i))
    lags = sorted(result["lags"])
    return {
        "trigger": kind,
        "n": n,
        "poll_interval_s": poll_interval,
        "events": len(result["fired"]),
        "polls": polls,
        "polls_per_run": polls / n,
        "requests_per_run": requests / n,
        "cpu_s": cpu,
        "wall_s": wall,
        "cores": cpu / wall,
        "cpu_ms_per_1000_polls": 1000 * 1000 * cpu / polls,
        "rss_kib_per_trigger": (result["peak_rss"] - rss_before) / 1024 / n,
        "loop_lag_p50_ms": 1000 * percentile(lags, 50),
        "loop_lag_p99_ms": 1000 * percentile(lags, 99),
        "loop_lag_max_ms": 1000 * lags[-1],
        "tcp_connections": after["connections"] - before["connections"],
        "detect_p50_s": percentile(latencies, 50),
        "detect_p99_s": percentile(latencies, 99),
    }


def run(emulator: Emulator, sizes: list[int], poll_interval: float, window: float) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        for kind in TRIGGERS:
            rows.append(run_one(emulator, kind, n, poll_interval, window))
    return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The baseline's CPU per poll over each of the provider's; above the no-HTTP floor too for the trigger
    that, like the floor, spreads its polls (the shared trigger polls in step and can cost less than it)."""
    by = {(r["trigger"], r["n"]): r for r in rows}
    out = []
    for n in sorted({r["n"] for r in rows}):
        base, floor, one_read = by[("session-per-poll", n)], by[("no-http", n)], by[("one-read-per-poll", n)]
        row: dict[str, Any] = {"n": n, "connections_baseline": base["tcp_connections"]}
        for kind in ("shared", "one-read-per-poll"):
            mine = by[(kind, n)]
            row[f"cpu_per_poll_baseline_over_{kind}"] = base["cpu_ms_per_1000_polls"] / mine["cpu_ms_per_1000_polls"]
            row[f"connections_{kind}"] = mine["tcp_connections"]
        row["http_cpu_per_poll_baseline_over_one-read-per-poll"] = (
            base["cpu_ms_per_1000_polls"] - floor["cpu_ms_per_1000_polls"]
        ) / (one_read["cpu_ms_per_1000_polls"] - floor["cpu_ms_per_1000_polls"])
        out.append(row)
    return out
