"""``orphans``: the runs not yet finished that carry an Airflow key no live task instance has, the runs a killed
DAG run, a deleted DAG or a worker that died for good left running (and billing) on the platform.

The platform is listed before Airflow's database is read: a task instance that starts a run meanwhile is then
not yet listed, rather than listed without its key among the live ones, so a fresh run is never taken for an
orphan.
"""

from __future__ import annotations

import sys
from argparse import Namespace
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from airflow_flowruns.cli.command import command, fail
from airflow_flowruns.cli.connection import cannot_cancel, connected
from airflow_flowruns.cli.live_keys import live_keys
from airflow_flowruns.cli.output import age_of, age_text, credits_of, emit_json, emit_table, text
from airflow_flowruns.exceptions import FlowRunsError
from airflow_flowruns.hooks.flow_run import FlowRunsHook, run_query
from airflow_flowruns.platforms.base import FlowRun, RunState

UNFINISHED = frozenset(state for state in RunState if not state.is_final)
COLUMNS = ("RUN", "FLOW", "STATE", "AGE", "AIRFLOW KEY", "CREDITS")


@dataclass(frozen=True)
class Keyed:
    """A run not yet finished and the Airflow key it carries."""

    run: FlowRun
    key: str


@command
def orphans(args: Namespace) -> None:
    with connected(args.conn_id) as hook:
        if args.cancel and not hook.platform.can_cancel:
            raise cannot_cancel(hook, "its orphaned runs")
        keyed = list(keyed_runs(hook, args.flow_id, args.since))
        live = live_keys()
        found = [item for item in keyed if not live.owns(item.key)]
        refused = cancel_all(hook, found) if args.cancel else None
    emit(found, refused, args.output)
    credits = sum(filter(None, (credits_of(item.run) for item in found)))
    print(f"{len(found)} orphaned run(s)" + (f", {credits:g} credits" if credits else "") + ".", file=sys.stderr)
    if refused:
        fail(f"{len(refused)} run(s) could not be cancelled: " + "; ".join(refused.values()), status=1)


def keyed_runs(hook: FlowRunsHook, flow_id: str | None, since: datetime | None) -> Iterator[Keyed]:
    """The unfinished runs that carry an Airflow key. Where listing items carry no metadata (Extend) a run
    whose item shows no key is read in full: only unfinished runs are, so the reads stay few."""
    platform = hook.platform
    for run in hook.client.iter_runs(run_query(flow_id, UNFINISHED, since, None, platform.largest_page)):
        key = platform.task_key_of(run)
        if key is None and not platform.listing_has_metadata:
            run = hook.get_run(run.flow_id or flow_id, run.id)
            key = platform.task_key_of(run)
        if key is not None and not run.state.is_final:
            yield Keyed(run, key)


def cancel_all(hook: FlowRunsHook, found: Iterable[Keyed]) -> dict[str, str]:
    """Cancel each run; the errors of those the platform refused, by run id."""
    refused: dict[str, str] = {}
    for item in found:
        call = hook.platform.cancel_call(item.run.flow_id, item.run.id)
        try:
            if call is not None:
                hook.client.call(call)
        except FlowRunsError as exc:
            refused[item.run.id] = str(exc)
    return refused


def emit(found: list[Keyed], refused: dict[str, str] | None, output: str) -> None:
    now = datetime.now(UTC)
    if output == "json":
        emit_json([_record(item, now, refused) for item in found])
        return
    if refused is None:
        emit_table(COLUMNS, (_row(item, now) for item in found))
    else:
        emit_table((*COLUMNS, "CANCELLED"), ([*_row(item, now), _yes(item.run.id not in refused)] for item in found))


def _row(item: Keyed, now: datetime) -> list[str]:
    run = item.run
    return [run.id, run.flow_id or "-", run.state.value, age_text(age_of(run, now)), item.key, text(credits_of(run))]


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _record(item: Keyed, now: datetime, refused: dict[str, str] | None) -> dict[str, Any]:
    record = {**item.run.to_xcom(), "airflow_key": item.key, "age_seconds": age_of(item.run, now)}
    if refused is not None:
        record["cancelled"] = item.run.id not in refused
    return record
