"""The hook of the connection a command names, resolved before anything is asked of the platform."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from airflow.providers.common.compat.sdk import AirflowNotFoundException

from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.hooks.flow_run import FlowRunsHook


@contextmanager
def connected(conn_id: str | None) -> Iterator[FlowRunsHook]:
    """The hook of ``conn_id`` (None: the default connection, as ``FlowRunsHook`` resolves it) with its client
    made, closed once the command is done: the connection exists, is of a platform's type, has the credentials
    the platform needs and extras that read; the provider's own error naming the fix otherwise."""
    hook = FlowRunsHook(conn_id)
    try:
        client = hook.client
    except AirflowNotFoundException:  # only a connection named: a default one not found is the hook's own error
        conn_id = hook.flowruns_conn_id
        raise FlowRunsConfigError(
            f"Connection {conn_id!r} is not defined here. Define it where this command runs as it is for the "
            f"workers: `airflow connections add`, the environment variable AIRFLOW_CONN_{conn_id.upper()}, or "
            "the secrets backend."
        ) from None
    try:
        yield hook
    finally:
        client.close()


def cannot_cancel(hook: FlowRunsHook, what: str) -> FlowRunsConfigError:
    """The error for a platform with no cancel call, naming what keeps going (``run 'x'``, ``its orphaned runs``)."""
    label = hook.platform.label
    return FlowRunsConfigError(
        f"{label} has no API call that cancels a run: {what} can only be stopped in {label}'s own interface."
    )
