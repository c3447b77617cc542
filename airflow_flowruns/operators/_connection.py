"""The connection an operator or sensor uses: the one it names, else the default one, resolved once per try."""

from __future__ import annotations

from functools import cached_property

from airflow_flowruns.hooks.flow_run import FlowRunsHook


class FlowRunsConnectionMixin:
    """Gives a task one hook for its whole try, so a default connection is looked up once, in the worker.

    ``flowruns_conn_id`` is templated, so the hook is made at first use in ``execute`` (or in the method a
    deferred task resumes in), after rendering. ``hook.flowruns_conn_id`` is the connection actually used: the
    id handed to triggers and named in logs, metrics and lineage, so nothing after the worker resolves again.
    """

    flowruns_conn_id: str | None

    @cached_property
    def hook(self) -> FlowRunsHook:
        return FlowRunsHook(self.flowruns_conn_id)
