"""What every command does around its job: stdout holds only its table or JSON (logs and warnings go to stderr),
and what it cannot do ends with the provider's own message on stderr and exit status 2, never a traceback. The
messages are the provider's errors, already scrubbed of the connection's secrets."""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from argparse import Namespace
from collections.abc import Callable
from typing import NoReturn, TextIO

from airflow_flowruns.exceptions import FlowRunsError

BAD_INPUT = 2
"""The exit status of a command given what can never work (a connection, a run, a permission), as argparse
exits for a bad argument."""

Command = Callable[[Namespace], None]


def fail(message: str, status: int = BAD_INPUT) -> NoReturn:
    print(f"flowruns: error: {message}", file=sys.stderr)
    raise SystemExit(status)


def command(job: Command) -> Command:
    """``job`` as a command: logs to stderr, the provider's errors turned into ``fail``, and a reader that
    stopped early (``| head``) taken as the end of the output."""

    @functools.wraps(job)
    def run(args: Namespace) -> None:
        logs_to_stderr()
        try:
            job(args)
        except FlowRunsError as exc:
            fail(str(exc))
        except BrokenPipeError:
            # What Python's documentation advises: nothing more goes to the closed pipe, not even at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(1) from None

    return run


def logs_to_stderr() -> None:
    """Move the log handlers writing to stdout (Airflow's console handler) to stderr, and Python's warnings with
    them, so a table or JSON on stdout stays whole whatever the client logs (a retry, a slow answer)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)
    show = warnings.showwarning

    def show_on_stderr(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        # Given a file, Airflow's warning hook writes to it instead of to its console log (stdout).
        show(message, category, filename, lineno, file or sys.stderr, line)

    warnings.showwarning = show_on_stderr
