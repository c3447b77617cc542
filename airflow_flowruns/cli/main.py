"""The ``flowruns`` console script: the commands of ``airflow flowruns`` (``.definition``), on Airflow
lines whose CLI reads no commands from providers (3.1) as on the others."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence

from airflow.cli.cli_config import ActionCommand, CLICommand

from airflow_flowruns.cli.definition import FLOWRUNS


def parser() -> argparse.ArgumentParser:
    made = argparse.ArgumentParser(prog="flowruns", description=FLOWRUNS.help)
    add_commands(made, FLOWRUNS.subcommands)
    return made


def add_commands(parent: argparse.ArgumentParser, commands: Iterable[CLICommand]) -> None:
    """Add ``commands`` below ``parent`` as Airflow's CLI adds them: a group's commands below it, an action's
    arguments to it, and its function as the ``func`` it is called with."""
    below = parent.add_subparsers(metavar="COMMAND", required=True)
    for command in commands:
        made = below.add_parser(command.name, help=command.help, description=command.description or command.help)
        if isinstance(command, ActionCommand):
            for argument in command.args:
                argument.add_to_parser(made)
            made.set_defaults(func=command.func)
        else:
            add_commands(made, command.subcommands)


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.func(args)
