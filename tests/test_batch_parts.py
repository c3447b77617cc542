"""The I/O-free parts of a batch, on values: keys and shards, the ledger, the census, the wait's verdict."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from airflow_flowruns.batch.census import Census
from airflow_flowruns.batch.documents import BatchKeys, Document
from airflow_flowruns.batch.ledger import LEDGER_KEY, PAGE_DOCUMENTS, Ledger
from airflow_flowruns.batch.progress import Outcome, ProgressLog, verdict
from airflow_flowruns.batch.submit import plan_try
from airflow_flowruns.platforms.base import ConnectionSettings, FlowRun, RunState
from airflow_flowruns.platforms.extend.api import Extend
from airflow_flowruns.platforms.noxus.api import Noxus
from airflow_flowruns.platforms.start import key_in_name, keyed_name
from airflow_flowruns.platforms.tableflow.api import TableFlow
from airflow_flowruns.platforms.usage import Usage
from airflow_flowruns.waiting import OnReview
from support.state_store import MemoryStateStore

KEYS = BatchKeys("af-0123456789abcdef")
T0 = datetime(2026, 12, 6, 12, tzinfo=UTC)


def settings() -> ConnectionSettings:
    return ConnectionSettings(conn_id="c", api_key="k", base_url="http://127.0.0.1:1")


def run(run_id: str, state: RunState, run_key: str | None, minutes: int = 0, **raw: Any) -> FlowRun:
    return FlowRun(
        id=run_id,
        flow_id="f",
        platform="tableflow",
        state=state,
        status=state.value,
        metadata={"airflow_task_key": run_key} if run_key else {},
        created_at=T0 + timedelta(minutes=minutes),
        raw=raw,
    )


def test_every_document_falls_in_exactly_one_shard() -> None:
    names = [f"2024/{i:05d}.pdf" for i in range(2000)]
    shards = [BatchKeys(KEYS.batch_key, shard, 4) for shard in range(4)]
    owners = [[s.shard for s in shards if s.owns_document(name)] for name in names]
    assert all(len(owner) == 1 for owner in owners)
    assert min(Counter(o[0] for o in owners).values()) > 400  # an even split, not all in one shard
    for name in names[:50]:
        (owner,) = (s for s in shards if s.owns_document(name))
        assert [s.owns_run_key(owner.run_key(name)) for s in shards].count(True) == 1


def test_run_keys_of_other_batches_or_malformed_are_not_ours() -> None:
    ours = KEYS.run_key("a.pdf")
    assert KEYS.owns_run_key(ours)
    assert not BatchKeys("af-fedcba9876543210").owns_run_key(ours)
    assert not KEYS.owns_run_key(KEYS.batch_key + ".xyz") and not KEYS.owns_run_key(None)


def test_keyed_names_carry_the_run_key_and_nothing_else_does() -> None:
    key = KEYS.run_key("2024/x.pdf")
    assert key_in_name(keyed_name(key, "x~y.pdf")) == key
    assert key_in_name("x~y.pdf") is None and key_in_name("plain.pdf") is None


def test_extend_and_noxus_find_run_keys_in_file_names_of_list_items() -> None:
    key = KEYS.run_key("a.pdf")
    summary = run("r", RunState.RUNNING, None, files=[{"id": "file_1", "name": keyed_name(key, "a.pdf")}])
    assert Extend(settings()).task_key_of(summary) == key
    noxus_run = run("r", RunState.RUNNING, None, input={"document": {"uri": "u", "name": keyed_name(key, "a.pdf")}})
    assert Noxus(settings()).task_key_of(noxus_run) == key
    assert TableFlow(settings()).task_key_of(summary) is None  # TableFlow keeps keys in metadata only


def test_the_ledger_pages_survive_a_try_and_name_unconfirmed_starts() -> None:
    store = MemoryStateStore()
    ledger = Ledger(store)
    keys = [f"d{i}" for i in range(PAGE_DOCUMENTS + 5)]
    pages = ledger.note(keys)
    assert len(pages) == 2
    ledger.confirm(pages[:1], {key: f"run-{key}" for key in keys[:PAGE_DOCUMENTS]}, {})
    view = Ledger(store).load()
    assert view.started == {key: f"run-{key}" for key in keys[:PAGE_DOCUMENTS]}
    assert view.unsure == set(keys[PAGE_DOCUMENTS:])
    assert store.values[LEDGER_KEY] == {"pages": 2}
    assert max(len(json.dumps(v)) for v in store.values.values()) < 64 * 1024


def test_a_ledger_page_naming_a_document_again_wins() -> None:
    store = MemoryStateStore()
    ledger = Ledger(store)
    ledger.confirm(ledger.note(["a", "b", "c"]), {"a": "r1", "b": "r2"}, {"c": "too large"})
    ledger.confirm(ledger.note(["a"]), {"a": "r3"}, {})
    assert Ledger(store).load().started == {"a": "r3", "b": "r2"}
    assert Ledger(store).load().refused == {"c": "too large"}
    assert Ledger(store, try_number=2).load().refused == {}  # a new try sends a refused document again


def test_the_census_keeps_the_newest_run_of_each_document() -> None:
    census = Census(KEYS, TableFlow(settings()))
    a, b = KEYS.run_key("a"), KEYS.run_key("b")
    for listed in [
        run("a1", RunState.FAILED, a, 0),
        run("a2", RunState.RUNNING, a, 0),  # same second: the live one replaced the failed one
        run("b1", RunState.CANCELLED, b, 0),
        run("b2", RunState.FAILED, b, 5),
        run("x", RunState.SUCCEEDED, "af-other.0123456789abcdef", 9),
        run("y", RunState.SUCCEEDED, None, 9),
    ]:
        census.add(listed)
    assert {key: seen.run_id for key, seen in census.newest.items()} == {a: "a2", b: "b2"}
    assert census.counts() == Counter({"running": 1, "failed": 1}) and census.runs == 4


def test_a_plan_follows_live_runs_and_reruns_failures_from_before_the_try() -> None:
    documents = [Document(name, {}) for name in ("alive", "failed", "fresh", "failed-now", "ledgered")]
    census = Census(KEYS, TableFlow(settings()))
    census.add(run("r1", RunState.RUNNING, KEYS.run_key("alive"), 0))
    census.add(run("r2", RunState.FAILED, KEYS.run_key("failed"), 0))
    census.add(run("r3", RunState.FAILED, KEYS.run_key("failed-now"), 30))
    view = Ledger(None).load()
    view.started["ledgered"] = ""
    plan = plan_try(documents, KEYS, view, census, rerun_before=T0 + timedelta(minutes=10))
    assert [doc.key for doc in plan.to_start] == ["failed", "fresh"]
    assert (plan.following, plan.rerunning) == (3, 1)
    within_try = plan_try(documents, KEYS, view, census, rerun_before=None)
    assert [doc.key for doc in within_try.to_start] == ["fresh"]


@pytest.mark.parametrize(
    ("counts", "pending", "max_in_flight", "on_review", "expected"),
    [
        ({"succeeded": 9, "failed": 1}, 0, None, "succeed", Outcome.SETTLED),
        ({"succeeded": 9, "running": 1}, 0, None, "succeed", None),
        ({"succeeded": 9, "needs_review": 1}, 0, None, "succeed", Outcome.SETTLED),
        ({"succeeded": 9, "needs_review": 1}, 0, None, "wait", None),
        ({"running": 4}, 6, 4, "succeed", None),
        ({"running": 2, "succeeded": 2}, 6, 4, "succeed", Outcome.ROOM),
        ({"running": 3}, 1, 4, "succeed", Outcome.ROOM),
    ],
)
def test_the_wait_ends_when_all_settled_or_room_frees_up(
    counts: dict[str, int], pending: int, max_in_flight: int | None, on_review: str, expected: Outcome | None
) -> None:
    assert verdict(Counter(counts), 10, pending, max_in_flight, OnReview(on_review)) == expected


def test_progress_lines_say_what_settled_and_estimate_the_rest() -> None:
    progress = ProgressLog(100, OnReview.SUCCEED, clock=0.0)
    first = progress.line(Counter({"running": 100}), 0, now=0.0)
    assert first.startswith("0 of 100 documents settled (running 100); 100 live; 0 answers 429")
    assert "not known yet" in first
    later = progress.line(Counter({"succeeded": 40, "failed": 10, "running": 50}), 3, now=300.0)
    assert "50 of 100 documents settled (failed 10, running 50, succeeded 40)" in later
    assert "3 answers 429" in later and "about 5.0 min left" in later


def test_usage_totals_sum_each_measure_over_the_runs_that_report_it() -> None:
    """A measure no run reports stays None, one some runs report is their sum, and credits that are floats
    read as the platform's own figures (0.1 + 0.2 is 0.3)."""
    usages = [Usage(credits=0.1, pages=2), None, Usage(credits=0.2), Usage(credits=1, pages=3)]
    assert Usage.total(usages) == Usage(credits=1.3, pages=5)
    assert Usage.total([None, None]) is None and Usage.total([]) is None
    assert Usage.total([Usage(tokens=0)]) == Usage(tokens=0), "a count of zero is reported, not missing"
    assert Usage.reported(credits=None, pages=None, tokens=None) is None
