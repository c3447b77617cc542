"""``runs list``, ``runs get`` and ``runs cancel``: a connection's runs, read and cancelled as the tasks do."""

from __future__ import annotations

from argparse import Namespace
from itertools import islice

from airflow_flowruns.cli.command import command
from airflow_flowruns.cli.connection import cannot_cancel, connected
from airflow_flowruns.cli.output import RUN_COLUMNS, credits_of, emit_json, emit_record, emit_table, run_row
from airflow_flowruns.hooks.flow_run import run_query
from airflow_flowruns.platforms.base import FlowRun


@command
def list_runs(args: Namespace) -> None:
    """The first ``--limit`` runs of the listing that match; the listing is walked no further than that."""
    query = run_query(args.flow_id, args.states, args.since, None, None)
    with connected(args.conn_id) as hook:
        runs = list(islice(hook.client.iter_runs(query), args.limit))
    if args.output == "json":
        emit_json([run.to_xcom() for run in runs])
    else:
        emit_table(RUN_COLUMNS, map(run_row, runs))


@command
def get_run(args: Namespace) -> None:
    with connected(args.conn_id) as hook:
        run = hook.get_run(args.flow_id, args.run_id)
    emit_run(run, args.output)


@command
def cancel_run(args: Namespace) -> None:
    """Cancel a run that has not finished, then show it as the platform reports it after the cancel call; a run
    already finished is shown as it is, with nothing sent."""
    with connected(args.conn_id) as hook:
        call = hook.platform.cancel_call(args.flow_id, args.run_id)
        if call is None:
            raise cannot_cancel(hook, f"run {args.run_id!r}")
        run = hook.get_run(args.flow_id, args.run_id)
        if not run.state.is_final:
            hook.client.call(call)
            run = hook.get_run(args.flow_id, args.run_id)
    emit_run(run, args.output)


def emit_run(run: FlowRun, output: str) -> None:
    if output == "json":
        emit_json(run.to_xcom())
    else:
        emit_record({**run.model_dump(), "credits": credits_of(run)})
