"""The connection a task, trigger or command uses when it is given no connection id.

A user who follows the connection docs creates ``tableflow_default`` (or ``extend_default``, ...), the id each
platform's connection type names as its default, not ``flowruns_default``. So without an id the provider takes
``flowruns_default`` when it exists, else the one ``<platform>_default`` that exists among the registered
platforms; none, or several, is the provider's config error naming every id it looked for and the fix.

The lookups are Airflow's own (``BaseHook.get_connection`` in a worker, ``aget_connection`` in the triggerer),
so a default connection may live wherever connections do: environment, metadata database or secrets backend.
``flowruns_default`` is looked up first and alone, so where it exists resolving costs one lookup, and the
connection found is handed on, never looked up again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import AirflowNotFoundException

from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.platforms import registered

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Connection

Lookup = Callable[[str], "Connection"]
AsyncLookup = Callable[[str], Awaitable["Connection"]]


def platform_default_ids() -> tuple[str, ...]:
    """Every registered platform's default connection id, in the order registered."""
    return tuple(facts.default_conn_id for facts in registered())


def default_connection(shared_id: str, lookup: Lookup) -> Connection:
    """``shared_id`` (``flowruns_default``) when it exists, else the one platform default that exists."""
    shared = _found(lookup, shared_id)
    if shared is not None:
        return shared
    return the_one(shared_id, [conn for conn_id in platform_default_ids() if (conn := _found(lookup, conn_id))])


async def adefault_connection(shared_id: str, lookup: AsyncLookup) -> Connection:
    """``default_connection`` for the triggerer, on Airflow's async connection lookup."""
    shared = await _afound(lookup, shared_id)
    if shared is not None:
        return shared
    found = [conn for conn_id in platform_default_ids() if (conn := await _afound(lookup, conn_id))]
    return the_one(shared_id, found)


def the_one(shared_id: str, found: Sequence[Connection]) -> Connection:
    """The only platform default connection found; the provider's error naming the fix for none or several."""
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(repr(conn.conn_id) for conn in found)
        raise FlowRunsConfigError(
            f"No connection id was given and several platforms have a default connection ({names}), so which one "
            f"to use is unclear. Pass flowruns_conn_id= (conn_id= to a trigger, --conn-id to the CLI) naming one "
            f"of them, or create {shared_id!r} for the one to use by default."
        )
    example = registered()[0]
    looked_for = ", ".join(repr(conn_id) for conn_id in (shared_id, *platform_default_ids()))
    raise FlowRunsConfigError(
        f"No connection id was given and no default connection exists (looked for {looked_for}). Pass "
        f"flowruns_conn_id= (conn_id= to a trigger, --conn-id to the CLI), or create the default connection of "
        f"your platform, e.g. AIRFLOW_CONN_{example.default_conn_id.upper()}="
        f'\'{{"conn_type": "{example.name}", "password": "<api key>"}}\'.'
    )


def _found(lookup: Lookup, conn_id: str) -> Connection | None:
    try:
        return lookup(conn_id)
    except AirflowNotFoundException:
        return None


async def _afound(lookup: AsyncLookup, conn_id: str) -> Connection | None:
    try:
        return await lookup(conn_id)
    except AirflowNotFoundException:
        return None


def one_conn_id(conn_id: str | None, flowruns_conn_id: str | None) -> str | None:
    """The connection id a trigger was given under either name: ``conn_id``, as triggers name it, or
    ``flowruns_conn_id``, as the operators do; None for neither (the default connection)."""
    if conn_id is not None and flowruns_conn_id is not None and conn_id != flowruns_conn_id:
        raise TypeError(
            f"conn_id={conn_id!r} and flowruns_conn_id={flowruns_conn_id!r} name two connections, and they are two "
            "names of one argument: pass one of them."
        )
    return conn_id if conn_id is not None else flowruns_conn_id
