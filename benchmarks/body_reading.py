"""Benchmark 6: what reading answers within ``max_response_bytes`` costs per poll.

Every answer is read through ``BoundedBody`` (client/body.py), which counts decompressed bytes as they
arrive. The baseline reads the same answer of the same request on the same client the plain way
(``response.read()`` in httpx, ``await response.read()`` in aiohttp), in the same run, the variants taking
turns round by round (in alternating order), so drift on a shared machine falls on both alike. Two
answers: a run's status (under a kilobyte) and a page of 1,000 runs. The emulator serves them
uncompressed, so a second table times the decoding alone, without HTTP, for an uncompressed and a gzip
body of each size.

CPU is this process's (the emulator runs in its own): microseconds per poll, medians over the rounds.
Wall time is not reported: on loopback it is the emulator's time to answer, the same for both variants.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import httpx

from airflow_flowruns.client.async_client import AsyncFlowRunsClient
from airflow_flowruns.client.body import BoundedBody, build_request
from airflow_flowruns.client.options import DEFAULT_MAX_RESPONSE_BYTES
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms.base import ApiCall, RunQuery
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_RECONCILIATION_FLOW
from benchmarks.common import Emulator

T = TypeVar("T")
ROUNDS = 10
PAGE_RUNS = 1000
CHUNK = 64 * 1024
VARIANTS = ("bounded", "plain")


def _calls(hook: FlowRunsHook, run_id: str) -> dict[str, ApiCall]:
    platform = hook.platform
    listing = platform.list_runs_call(RunQuery(flow_id=TABLEFLOW_RECONCILIATION_FLOW, page_size=PAGE_RUNS))
    call = platform.get_run_call(TABLEFLOW_RECONCILIATION_FLOW, run_id)
    assert call is not None
    return {"status": call, "page of 1000 runs": listing}


def _sync_reader(http: httpx.Client, call: ApiCall, variant: str) -> Callable[[], int]:
    def read() -> int:
        response = http.send(build_request(http, call, 30.0), stream=True)
        try:
            if variant == "plain":
                return len(response.read())
            body = BoundedBody(response.headers, DEFAULT_MAX_RESPONSE_BYTES)
            for chunk in response.iter_raw():
                body.feed(chunk)
            return len(body.finish())
        finally:
            response.close()

    return read


def _async_reader(client: AsyncFlowRunsClient, call: ApiCall, variant: str) -> Callable[[], Awaitable[int]]:
    """The triggerer's direct aiohttp request (``AsyncFlowRunsClient._send_direct``), read either way."""

    async def read() -> int:
        async with client._aiohttp_session().request(
            call.method,
            client._base_url + call.path.lstrip("/"),
            params=call.params,
            headers=client._headers,
            allow_redirects=False,
            auto_decompress=variant == "plain",
        ) as response:
            if variant == "plain":
                return len(await response.read())
            body = BoundedBody(httpx.Headers(response.raw_headers), DEFAULT_MAX_RESPONSE_BYTES)
            async for chunk in response.content.iter_chunked(CHUNK):
                body.feed(chunk)
            return len(body.finish())

    return read


def _row(client: str, answer: str, variant: str, cpu: float, size: int) -> dict[str, Any]:
    return {"client": client, "answer": answer, "variant": variant, "bytes": size, "cpu_us_per_poll": cpu}


def _with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each bounded row gains its cost over the plain read of the same answer on the same client."""
    plain = {(r["client"], r["answer"]): r for r in rows if r["variant"] == "plain"}
    for row in rows:
        base = plain[(row["client"], row["answer"])]
        row["cpu_over_plain"] = row["cpu_us_per_poll"] / base["cpu_us_per_poll"]
        row["cpu_us_added"] = row["cpu_us_per_poll"] - base["cpu_us_per_poll"]
    return rows


def run(emulator: Emulator, polls: int, rounds: int = ROUNDS) -> dict[str, list[dict[str, Any]]]:
    """Each (client, answer, variant) read ``polls`` times a round, for ``rounds`` rounds taken in turn;
    then the decoding alone of the same answers, ``polls`` times a round."""
    emulator.reset()
    ids = emulator.seed(TABLEFLOW_RECONCILIATION_FLOW, PAGE_RUNS, processing_seconds=3600)
    hook = FlowRunsHook(emulator.connect("bench_body_reading"))
    calls = _calls(hook, ids[0])
    rows: list[dict[str, Any]] = []
    http = hook.client._http
    try:
        for answer, call in calls.items():
            readers = {variant: _sync_reader(http, call, variant) for variant in VARIANTS}
            rows += _measure("sync (workers)", answer, readers, polls, rounds)
        rows += asyncio.run(_measure_async(calls, polls, rounds))
        bodies = {answer: _read_whole(http, call) for answer, call in calls.items()}
    finally:
        hook.client.close()
    return {"http": _with_ratios(rows), "decoding": decoding(bodies, polls, rounds)}


def _measure(
    client: str, answer: str, readers: dict[str, Callable[[], int]], polls: int, rounds: int
) -> list[dict[str, Any]]:
    sizes = {v: read() for v, read in readers.items()}  # warm: connection open, code paths loaded
    assert len(set(sizes.values())) == 1, sizes
    cpu = _cpu_per_call(readers, polls, rounds)
    return [_row(client, answer, v, cpu[v], sizes[v]) for v in readers]


async def _measure_async(calls: dict[str, ApiCall], polls: int, rounds: int) -> list[dict[str, Any]]:
    client = await FlowRunsHook.get_async_client("bench_body_reading")
    rows: list[dict[str, Any]] = []
    try:
        for answer, call in calls.items():
            readers = {variant: _async_reader(client, call, variant) for variant in VARIANTS}
            cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
            sizes = {v: await read() for v, read in readers.items()}
            assert len(set(sizes.values())) == 1, sizes
            for turn in range(rounds):
                for variant, read in _in_turn(readers, turn):
                    cpu0 = time.process_time()
                    for _ in range(polls):
                        await read()
                    cpu[variant].append((time.process_time() - cpu0) / polls * 1e6)
            rows += [_row("async (triggerer)", answer, v, statistics.median(cpu[v]), sizes[v]) for v in VARIANTS]
    finally:
        await FlowRunsHook.close_async_clients()
    return rows


def decoding(bodies: dict[str, bytes], repeats: int, rounds: int = ROUNDS) -> list[dict[str, Any]]:
    """Decoding alone, no HTTP: ``BoundedBody`` over 64 KiB chunks against ``bytes`` joined (uncompressed)
    or ``gzip.decompress`` (gzip), for each body, uncompressed and gzip."""
    rows: list[dict[str, Any]] = []
    for answer, raw in bodies.items():
        for encoding, wire in (("identity", raw), ("gzip", gzip.compress(raw))):
            chunks = [wire[i : i + CHUNK] for i in range(0, len(wire), CHUNK)]
            work = {
                "bounded": functools.partial(_decode_bounded, chunks, encoding),
                "plain": functools.partial(_decode_plain, chunks, encoding),
            }
            assert {variant: decode() for variant, decode in work.items()} == {v: len(raw) for v in work}
            cpu = _cpu_per_call(work, repeats, rounds)
            rows += [
                {
                    "answer": answer,
                    "encoding": encoding,
                    "variant": variant,
                    "bytes": len(raw),
                    "cpu_us": cpu[variant],
                    "cpu_over_plain": cpu[variant] / cpu["plain"],
                }
                for variant in work
            ]
    return rows


def _decode_bounded(chunks: list[bytes], encoding: str) -> int:
    body = BoundedBody({"content-encoding": encoding}, DEFAULT_MAX_RESPONSE_BYTES)
    for chunk in chunks:
        body.feed(chunk)
    return len(body.finish())


def _decode_plain(chunks: list[bytes], encoding: str) -> int:
    joined = b"".join(chunks)
    return len(gzip.decompress(joined) if encoding == "gzip" else joined)


def _in_turn(work: Mapping[str, T], turn: int) -> list[tuple[str, T]]:
    """The variants in the order of this round: reversed every other round, so going first (or second)
    costs or saves each variant alike."""
    items = list(work.items())
    return items[::-1] if turn % 2 else items


def _cpu_per_call(work: Mapping[str, Callable[[], int]], repeats: int, rounds: int) -> dict[str, float]:
    """Median CPU microseconds per call of each variant, the variants taking turns round by round."""
    cpu: dict[str, list[float]] = {variant: [] for variant in work}
    for turn in range(rounds):
        for variant, call in _in_turn(work, turn):
            cpu0 = time.process_time()
            for _ in range(repeats):
                call()
            cpu[variant].append((time.process_time() - cpu0) / repeats * 1e6)
    return {variant: statistics.median(values) for variant, values in cpu.items()}


def _read_whole(http: httpx.Client, call: ApiCall) -> bytes:
    response = http.send(build_request(http, call, 30.0))
    response.raise_for_status()
    return response.content
