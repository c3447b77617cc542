"""The commands, defined once for both ways of running them: Airflow 3.2+ builds ``airflow flowruns`` from
``get_flowruns_cli_commands`` (the provider info's ``cli`` entry), and the ``flowruns`` console script
(``.main``) builds the same tree with argparse on every Airflow line.

Each command's module is imported only when the command runs: every other ``airflow`` command builds the whole
parser, and pays only for these definitions.
"""

from __future__ import annotations

from airflow.cli.cli_config import ActionCommand, CLICommand, GroupCommand, lazy_load_command

from airflow_flowruns.cli import arguments as arg
from airflow_flowruns.platforms import registered

_PACKAGE = "airflow_flowruns.cli"

RUNS = GroupCommand(
    name="runs",
    help="List, read and cancel a connection's runs",
    subcommands=(
        ActionCommand(
            name="list",
            help="List runs, newest first where the platform sorts so",
            func=lazy_load_command(f"{_PACKAGE}.runs.list_runs"),
            args=(arg.CONN_ID, arg.FLOW, arg.STATE, arg.SINCE, arg.LIMIT, arg.OUTPUT),
        ),
        ActionCommand(
            name="get",
            help="Show one run",
            func=lazy_load_command(f"{_PACKAGE}.runs.get_run"),
            args=(arg.RUN_ID, arg.CONN_ID, arg.FLOW, arg.OUTPUT),
        ),
        ActionCommand(
            name="cancel",
            help="Cancel one run, where the platform can",
            func=lazy_load_command(f"{_PACKAGE}.runs.cancel_run"),
            args=(arg.RUN_ID, arg.CONN_ID, arg.FLOW, arg.OUTPUT),
        ),
    ),
)
ORPHANS = ActionCommand(
    name="orphans",
    help="List the runs started by Airflow tasks that are gone (a killed DAG run, a deleted DAG), with age and cost",
    description=(
        "List the runs not yet finished that carry an Airflow task key whose task instance will not come back "
        "for them: not running, deferred, queued, scheduled or up for retry or reschedule, in a DAG run that is "
        "no longer running. Reads Airflow's metadata database: run it where `airflow db check` passes."
    ),
    func=lazy_load_command(f"{_PACKAGE}.orphans.orphans"),
    args=(arg.CONN_ID, arg.FLOW, arg.SINCE, arg.CANCEL, arg.OUTPUT),
)
DOCTOR = ActionCommand(
    name="doctor",
    help="Check a connection: resolve, connect, TLS and scheme, authenticate, read a page of runs",
    description=(
        "Check a connection step by step and name the fix for each failure; it also reports the clock offset "
        "to the platform, the rate limit it sees and the base path the calls go to. Exit status 0 when every "
        "check passes, 1 when one fails, 2 when the connection cannot be used at all."
    ),
    func=lazy_load_command(f"{_PACKAGE}.doctor.doctor"),
    args=(arg.CONN, arg.FLOW, arg.OUTPUT),
)
FLOWRUNS = GroupCommand(
    name="flowruns",
    help=f"Runs on {', '.join(facts.label for facts in registered())}: list, cancel, orphans, doctor",
    subcommands=(RUNS, ORPHANS, DOCTOR),
)


def get_flowruns_cli_commands() -> list[CLICommand]:
    """The ``flowruns`` command group, as Airflow's CLI reads a provider's commands."""
    return [FLOWRUNS]
