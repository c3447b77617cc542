"""Each benchmark at a tiny size, so the harness cannot rot. Only completeness is checked, never speed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import body_reading, extend_economy, request_economy, trigger_density, uploads
from benchmarks.common import Emulator, emulator


@pytest.fixture(scope="module")
def tls_emulator() -> Iterator[Emulator]:
    with emulator() as emu:
        yield emu


@pytest.mark.integration
def test_trigger_density_delivers_every_event_for_every_trigger(tls_emulator: Emulator) -> None:
    rows = trigger_density.run(tls_emulator, [30], poll_interval=0.3, window=0.5)
    assert [(r["trigger"], r["n"], r["events"]) for r in rows] == [
        ("shared", 30, 30),
        ("one-read-per-poll", 30, 30),
        ("session-per-poll", 30, 30),
        ("no-http", 30, 30),
    ]
    shared, one_read, baseline, floor = rows
    assert floor["tcp_connections"] == 0
    assert shared["tcp_connections"] <= trigger_density.POOL_SLOTS
    assert one_read["tcp_connections"] <= trigger_density.POOL_SLOTS
    assert baseline["tcp_connections"] >= baseline["polls"], "the baseline opens a connection per poll"
    assert one_read["requests_per_run"] == one_read["polls_per_run"], "one request per poll"
    assert shared["requests_per_run"] < shared["polls_per_run"], "the listing answers several polls at once"
    assert all(r["polls"] >= r["n"] and r["detect_p99_s"] >= 0 for r in rows)
    assert trigger_density.ratios(rows)[0]["n"] == 30


@pytest.mark.integration
def test_uploads_compare_the_provider_with_curl(tls_emulator: Emulator, tmp_path: Path) -> None:
    rows = uploads.run(tls_emulator, 2, tmp_path, rounds=2)
    assert rows[0]["client"] == "provider" and rows[0]["size_mib"] == 2
    assert all(row["rounds"] == 2 and len(row["mib_per_s_each"]) == 2 and row["mib_per_s"] > 0 for row in rows)
    ratio = uploads.throughput_ratio(rows)
    assert ratio is None if len(rows) == 1 else ratio == rows[0]["mib_per_s"] / rows[1]["mib_per_s"]
    assert not list(tmp_path.iterdir()), "the test file is removed"


@pytest.mark.integration
def test_request_economy_sees_every_final_state(tls_emulator: Emulator) -> None:
    row = request_economy.run(tls_emulator, runs=10, limit=20, poll_interval=0.5)
    assert (row["final_states_seen"], row["failed_tasks"]) == (10, 0)
    assert row["requests"] >= 10


@pytest.mark.integration
def test_extend_economy_follows_both_sets_of_runs_under_a_limit() -> None:
    with extend_economy.limited_emulator(limit=20) as emu:
        rows = extend_economy.run(emu, runs=20, limit=20, poll_interval=0.5, offset=1.0, window=2.0)
    assert [(r["trigger"], r["runs"], r["events"], r["failed_triggers"]) for r in rows] == [
        ("change-feed", 20, 20, 0),
        ("one-read-per-poll", 20, 20, 0),
    ]
    assert all(r["requests"] >= 20 for r in rows), "every run read at least once"
    assert all(r["detection_p99_s"] >= r["detection_p50_s"] >= 0 for r in rows)


@pytest.mark.integration
def test_body_reading_compares_each_bounded_read_with_a_plain_one(tls_emulator: Emulator) -> None:
    measured = body_reading.run(tls_emulator, polls=2, rounds=1)
    http = measured["http"]
    assert sorted((r["client"], r["answer"], r["variant"]) for r in http) == sorted(
        (client, answer, variant)
        for client in ("sync (workers)", "async (triggerer)")
        for answer in ("status", "page of 1000 runs")
        for variant in body_reading.VARIANTS
    )
    sizes = {(r["answer"], r["bytes"]) for r in http}
    assert len(sizes) == 2, "both variants and clients read the same answers"
    assert all(r["cpu_us_per_poll"] > 0 and r["cpu_over_plain"] > 0 for r in http)
    assert [r["cpu_over_plain"] for r in http if r["variant"] == "plain"] == [1.0] * 4
    decoding = measured["decoding"]
    assert sorted((r["answer"], r["encoding"], r["variant"]) for r in decoding) == sorted(
        (answer, encoding, variant)
        for answer in ("status", "page of 1000 runs")
        for encoding in ("identity", "gzip")
        for variant in ("bounded", "plain")
    )
