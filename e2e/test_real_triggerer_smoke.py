"""The real-triggerer benchmark at a tiny size (``make e2e`` runs it: about 100 s, too long for ``make test``).

Ten ``FlowRunOperator`` tasks really run and defer, then a real ``airflow triggerer`` follows them, once per
trigger kind. Only completeness is checked (every event delivered, every figure measured), never speed. On
SQLite, so that ``make e2e`` needs no PostgreSQL server (``make bench`` runs the benchmark on one).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks import real_triggerer
from benchmarks.common import emulator


def test_real_triggerer_delivers_every_event_of_really_deferred_tasks(tmp_path: Path) -> None:
    with emulator() as emu:
        rows = real_triggerer.run(emu, tmp_path, ["tableflow"], [10], poll_interval=1.0, window=1.0, database="sqlite")
    assert [(r["trigger"], r["created"], r["events"], r["settled"], r["still_deferred"]) for r in rows] == [
        ("shared", "real", 10, 10, 0),
        ("session-per-poll", "real", 10, 10, 0),
    ]
    for row in rows:
        assert row["polls"] >= 10, "every trigger polled and its event kept the times"
        assert row["steady_polls"] > 0
        assert row["cpu_ms_per_poll"] > 0
        assert row["supervisor_cores"] > 0
        assert row["runner_cores"] > 0
        assert row["database"] == "sqlite"
        assert row["database_cores"] == 0, "no database server: the triggerer's queries run in its own process"
        assert row["loop_lag_max_ms"] >= row["loop_lag_p99_ms"] >= 0, "the canary's samples were read"
        assert row["detect_p99_s"] >= 0
    baseline = rows[1]
    assert baseline["tcp_connections"] >= baseline["requests_per_run"] * 10, "the baseline opens a connection per poll"
    assert real_triggerer.ratios(rows)[0]["n"] == 10
