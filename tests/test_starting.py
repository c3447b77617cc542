"""Starting runs at most once per key, with no operator: what a task instance that starts one run per document
hands :func:`start_once` (one key and one ledger entry per document) is enough for every document to keep its
own run across tries."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms.base import FlowRun
from airflow_flowruns.platforms.start import StartRequest
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_SMALL_FILE_FLOW
from airflow_flowruns.starting import TaskTry, start_once
from support.emulator import Emulator

KEYS = {"a": "af-" + "a" * 24, "b": "af-" + "b" * 24}
"""One key per document of the batch."""


@dataclass
class Ledger:
    """A batch's ledger: the entry of each document's run, and the run each fresh run replaced."""

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    replaced: dict[str, str] = field(default_factory=dict)

    def record(self, key: str) -> LedgerEntry:
        return LedgerEntry(self, key)


@dataclass
class LedgerEntry:
    """One document's :class:`~airflow_flowruns.starting.RunRecord` in the ledger."""

    ledger: Ledger
    key: str

    def saved(self) -> Mapping[str, Any]:
        return self.ledger.entries.get(self.key, {})

    def save(self, entry: dict[str, Any]) -> None:
        self.ledger.entries[self.key] = entry

    def replacing(self, earlier: FlowRun) -> None:
        self.ledger.replaced[self.key] = earlier.id


class NothingSaved:
    """A record with nowhere to save (a task without a state store): retries find runs by key alone."""

    def saved(self) -> Mapping[str, Any]:
        return {}

    def save(self, entry: dict[str, Any]) -> None:
        pass

    def replacing(self, earlier: FlowRun) -> None:
        pass


def start_documents(
    conn_id: str, pdfs: dict[str, Path], try_number: int, records: Mapping[str, Any]
) -> dict[str, FlowRun]:
    """One try of the batch: a run for each document, under its own key and record."""
    hook = FlowRunsHook(conn_id)
    task_try = TaskTry(number=try_number, runs_since=None, log=logging.getLogger("batch"))
    return {
        name: start_once(
            hook, StartRequest(TABLEFLOW_SMALL_FILE_FLOW, {"document": pdfs[name]}), key, records[name], task_try
        )
        for name, key in KEYS.items()
    }


def test_each_document_follows_its_own_run_and_only_its_failed_one_is_started_again(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path]
) -> None:
    ledger = Ledger()
    records = {name: ledger.record(key) for name, key in KEYS.items()}
    first = start_documents(tableflow_conn, pdfs, 1, records)
    assert first["a"].id != first["b"].id
    assert ledger.entries == {KEYS[name]: {"id": run.id, "flow_id": run.flow_id} for name, run in first.items()}
    emulator.set_status(first["a"].id, "failed", error="unreadable scan")
    retry = start_documents(tableflow_conn, pdfs, 2, records)
    assert retry["b"].id == first["b"].id, "the live run of b is followed"
    assert retry["a"].id not in (first["a"].id, first["b"].id), "a failed: a fresh run"
    assert ledger.replaced == {KEYS["a"]: first["a"].id}
    assert ledger.entries[KEYS["a"]]["id"] == retry["a"].id
    assert len(emulator.runs()) == 3


def test_with_nothing_saved_a_retry_finds_each_documents_run_by_its_own_key(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path]
) -> None:
    records = {name: NothingSaved() for name in KEYS}
    first = start_documents(tableflow_conn, pdfs, 1, records)
    retry = start_documents(tableflow_conn, pdfs, 2, records)
    assert {name: run.id for name, run in retry.items()} == {name: run.id for name, run in first.items()}
    assert len(emulator.runs()) == 2


def test_a_first_try_with_nothing_saved_looks_nothing_up(
    tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path]
) -> None:
    """Keys of a first try have no earlier run: the flow's runs are not listed before starting."""
    start_documents(tableflow_conn, pdfs, 1, {name: NothingSaved() for name in KEYS})
    assert [r for r in emulator.requests() if r["method"] == "GET" and r["path"] == "/v2/flows/runs"] == []
    assert len(emulator.runs()) == 2


@pytest.mark.parametrize("reattach", [True, False])
def test_reattach_false_starts_afresh_and_still_saves_the_run(
    reattach: bool, tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path]
) -> None:
    ledger = Ledger()
    hook = FlowRunsHook(tableflow_conn)
    request = StartRequest(TABLEFLOW_SMALL_FILE_FLOW, {"document": pdfs["a"]})
    record = ledger.record(KEYS["a"])
    tries = [TaskTry(number, None, logging.getLogger("batch")) for number in (1, 2)]
    runs = [start_once(hook, request, KEYS["a"], record, task_try, reattach=reattach) for task_try in tries]
    assert (runs[0].id == runs[1].id) is reattach
    assert ledger.entries[KEYS["a"]] == {"id": runs[1].id, "flow_id": runs[1].flow_id}
    assert len(emulator.runs()) == (1 if reattach else 2)
