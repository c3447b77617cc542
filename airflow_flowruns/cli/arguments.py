"""The commands' arguments, and the values they take: parsed before a command runs, so a bad value is an
argparse error (usage, the argument, exit status 2) and no command sees it."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta

from airflow.cli.cli_config import Arg

from airflow_flowruns.platforms import registered
from airflow_flowruns.platforms.base import RunState

DEFAULT_LIMIT = 100
_AGE = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def since(value: str) -> datetime:
    """An age (``30m``, ``12h``, ``2d``, ``1w``) counted back from now, or an ISO date or time; a time without a
    zone is UTC, as Airflow stores times."""
    text = value.strip()
    age = _AGE.fullmatch(text)
    if age:
        return datetime.now(UTC) - timedelta(**{_UNITS[age.group(2)]: int(age.group(1))})
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither an age (30m, 12h, 2d, 1w) nor an ISO date or time (2024-05-01, "
            "2024-05-01T12:00:00+02:00)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return number


DEFAULT_CONN = "flowruns_default, else the one <platform>_default connection that exists"
"""What a command without a connection id uses, as ``FlowRunsHook`` resolves it."""
CONN_ID = Arg(
    ("--conn-id",),
    help=(
        f"the Airflow connection of the platform (of type {', '.join(facts.name for facts in registered())}); "
        f"default: {DEFAULT_CONN}"
    ),
)
CONN = Arg(("conn_id",), metavar="CONN", nargs="?", help=f"the Airflow connection to check; default: {DEFAULT_CONN}")
FLOW = Arg(
    ("--flow",),
    dest="flow_id",
    metavar="FLOW",
    help="the flow (workflow) id; every flow when omitted (StackAI needs one)",
)
STATE = Arg(
    ("--state",),
    dest="states",
    action="append",
    choices=[state.value for state in RunState],
    help="only runs in this state (repeat it for several)",
)
SINCE = Arg(("--since",), type=since, help="only runs created since: an age (30m, 12h, 2d, 1w) or an ISO date or time")
LIMIT = Arg(
    ("--limit",), type=positive_int, default=DEFAULT_LIMIT, help=f"the most runs shown (default {DEFAULT_LIMIT})"
)
OUTPUT = Arg(("-o", "--output"), choices=("table", "json"), default="table", help="table (default) or json")
RUN_ID = Arg(("run_id",), metavar="RUN_ID", help="the run's id on the platform")
CANCEL = Arg(("--cancel",), action="store_true", help="cancel every run listed")
