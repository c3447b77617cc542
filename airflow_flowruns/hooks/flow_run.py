"""The hook: one Airflow connection in, a platform client out.

Workers get a blocking client per hook. The triggerer gets one async client per event loop and
connection, shared by every trigger waiting on that connection, so thousands of deferred tasks share
one keep-alive pool instead of opening a session per poll.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import BaseHook, mask_secret

from airflow_flowruns import metrics
from airflow_flowruns.client import AsyncFlowRunsClient, FlowRunsClient, HttpOptions
from airflow_flowruns.client.errors import readable_answers
from airflow_flowruns.client.retry import until
from airflow_flowruns.connection_forms import has_connection_form
from airflow_flowruns.exceptions import FlowRunsConfigError, FlowRunsError, FlowRunTimeoutError, is_transient
from airflow_flowruns.hooks.default_connection import default_connection
from airflow_flowruns.platforms import PlatformFacts, platform_class, registered
from airflow_flowruns.platforms.base import ConnectionSettings, FlowRun, Platform, RunQuery, RunState
from airflow_flowruns.platforms.batching import BatchDocument
from airflow_flowruns.platforms.start import StartedBy, StartRequest
from airflow_flowruns.platforms.values import base_url_from
from airflow_flowruns.waiting import OnReview, WaitProgress, is_settled

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Connection


def platform_from_connection(conn: Connection) -> tuple[Platform, HttpOptions]:
    """The platform decides which credentials it needs (``Platform.check_credentials``); the password is masked."""
    cls = platform_class(conn.conn_type, conn.conn_id)
    if conn.password:
        mask_secret(conn.password)
    extras = conn.extra_dejson
    settings = ConnectionSettings(
        conn_id=conn.conn_id,
        api_key=conn.password or "",
        base_url=base_url_from(conn.conn_id, conn.host, conn.port, conn.schema, cls),
        extras=extras,
        login=conn.login or None,
    )
    return cls(settings), HttpOptions.from_extras(extras, conn.conn_id)


def run_query(
    flow_id: str | None,
    states: Iterable[RunState | str] | None,
    created_after: datetime | None,
    created_before: datetime | None,
    page_size: int | None,
) -> RunQuery:
    try:
        wanted = frozenset(RunState(state) for state in states) if states is not None else None
    except ValueError as exc:
        raise FlowRunsConfigError(f"{exc}; states are: {', '.join(RunState)}.") from None
    if page_size is not None and page_size < 1:
        raise FlowRunsConfigError(f"page_size must be at least 1, not {page_size}.")
    return RunQuery(flow_id or None, wanted, created_after, created_before, page_size)


class FlowRunsHook(BaseHook):
    """Talks to whichever flow platform the connection's type names (``tableflow``, ...).

    :param flowruns_conn_id: the connection to use. Without one (None) the hook uses ``flowruns_default`` when
        it exists, else the one ``<platform>_default`` connection that exists (``tableflow_default``, ...); none
        or several is a ``FlowRunsConfigError`` naming the ids looked for (``hooks.default_connection``). It is
        resolved once, at the hook's first use of its connection; ``flowruns_conn_id`` then names the one found.
    """

    conn_name_attr = "flowruns_conn_id"
    default_conn_name = "flowruns_default"
    conn_type = "flowruns"
    hook_name = "Flow runs"

    _async_clients: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopClients]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, flowruns_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._given_conn_id = flowruns_conn_id

    @property
    def flowruns_conn_id(self) -> str:
        """The connection's id: the one given, else the default connection's, looked up on first use."""
        return self._given_conn_id if self._given_conn_id is not None else self._connection.conn_id

    @cached_property
    def _connection(self) -> Connection:
        if self._given_conn_id is not None:
            return self.get_connection(self._given_conn_id)
        return default_connection(FlowRunsHook.default_conn_name, self.get_connection)

    @cached_property
    def client(self) -> FlowRunsClient:
        return FlowRunsClient(*platform_from_connection(self._connection))

    def get_conn(self) -> FlowRunsClient:
        return self.client

    @property
    def platform(self) -> Platform:
        return self.client.platform

    def start_run(self, request: StartRequest) -> FlowRun:
        """Start one run; an answer the platform module cannot read is the provider's own error, marked as a
        start that may have happened, so it is looked up rather than sent again."""
        with readable_answers(self.platform, "start run", outcome_unknown=True):
            run = self.platform.start_run(self.client, request)
        metrics.started(self.platform.name, self.flowruns_conn_id)
        metrics.settled(run, self.flowruns_conn_id)  # a platform that runs synchronously answers with the settled run
        return run

    def start_batch(
        self,
        flow_id: str,
        documents: Sequence[BatchDocument],
        flow_version: str | None,
        metadata: Mapping[str, Any],
        started_by: StartedBy | None = None,
    ) -> str:
        """Start one run per document with one call, where the platform has one (``Platform.batch_inputs``);
        the batch id. Like ``start_run``, an unreadable answer is a start that may have happened."""
        with readable_answers(self.platform, "start batch", outcome_unknown=True):
            batch_id = self.platform.start_batch(self.client, flow_id, documents, flow_version, metadata, started_by)
        metrics.started(self.platform.name, self.flowruns_conn_id, len(documents))
        return batch_id

    def get_run(self, flow_id: str | None, run_id: str) -> FlowRun:
        return self.client.get_run(flow_id, run_id)

    def cancel_run(self, flow_id: str | None, run_id: str) -> bool:
        """Ask the platform to cancel; False where it has no cancel call. Best effort, never raises."""
        call = self.platform.cancel_call(flow_id, run_id)
        if call is None:
            self.log.warning(
                "%s has no cancel call: run %s keeps going on the platform side.", self.platform.label, run_id
            )
            return False
        try:
            self.client.call(call)
        except FlowRunsError as exc:
            self.log.warning("Could not cancel %s run %s: %s", self.platform.label, run_id, exc)
            return False
        self.log.info("Asked %s to cancel run %s.", self.platform.label, run_id)
        return True

    def wait_for_run(
        self,
        flow_id: str | None,
        run_id: str,
        *,
        deadline: float,
        poll_interval: float,
        on_review: OnReview,
    ) -> FlowRun:
        """Poll from the worker until the run settles, or return its last state once the deadline passes.

        The last poll happens at the deadline itself, so a run that finished just in time is not
        reported as timed out. The log gets each state once and a heartbeat while none changes
        (``WaitProgress``); the caller logs how the wait ended.
        """
        run: FlowRun | None = None
        progress = WaitProgress(self.log)
        while True:
            try:
                with until(deadline):
                    run = self.get_run(flow_id, run_id)
            except FlowRunsError as exc:
                if not is_transient(exc):
                    raise
                self.log.warning("Polling run %s failed for now, will poll again: %s", run_id, exc)
            remaining = deadline - time.time()
            if run is not None and (is_settled(run, on_review) or remaining <= 0):
                metrics.settled(run, self.flowruns_conn_id)
                return run
            if remaining <= 0:
                raise FlowRunTimeoutError(f"Deadline reached before run {run_id!r} could be read once.")
            if run is not None:
                progress.seen(run, next_check=min(poll_interval, remaining))
            time.sleep(min(poll_interval, remaining))

    def list_runs(
        self,
        flow_id: str | None = None,
        states: Iterable[RunState | str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        page_size: int | None = None,
    ) -> Iterator[FlowRun]:
        """Lazily list runs, newest first where the platform sorts that way, walking every page.

        ``created_after`` is inclusive and ``created_before`` exclusive. Filters the platform's API
        lacks are applied here, client-side (each platform module says which). A listing that does not end
        within ``client.listing.LISTING_BOUNDS`` (a repeated page, more pages, runs or seconds than a real
        listing takes) ends with ``FlowRunsListingError`` after the runs read.
        """
        return self.client.iter_runs(run_query(flow_id, states, created_after, created_before, page_size))

    async def alist_runs(
        self,
        flow_id: str | None = None,
        states: Iterable[RunState | str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[FlowRun]:
        """``list_runs`` for the triggerer, on the shared async client."""
        client = await self.get_async_client(self.flowruns_conn_id)
        async for run in client.iter_runs(run_query(flow_id, states, created_after, created_before, page_size)):
            yield run

    def test_connection(self) -> tuple[bool, str]:
        """Make one cheap call; pass or fail, the answer names the base URL it used, the first thing to
        check when a host was typed wrong. A connection refused before any call (one with a password in
        its host, say) has no URL to name and is reported as refused."""
        try:
            client = self.client
        except FlowRunsError as exc:
            return False, str(exc)
        base_url = client.platform.settings.base_url
        try:
            client.call(client.platform.test_call())
        except FlowRunsError as exc:
            return False, f"{exc} (base URL tried: {base_url})"
        return True, f"Connected to {client.platform.label} at {base_url}."

    @classmethod
    async def get_async_client(cls, conn_id: str) -> AsyncFlowRunsClient:
        """The async client shared by every trigger on ``conn_id`` in the running event loop.

        Triggers that ask while it is being made all wait on the one task making it, so they resume
        together (their polls still answered as one batch), not one by one as waiters on a lock would.
        A failed attempt is forgotten, so a connection fixed later is picked up.
        """
        loop = asyncio.get_running_loop()
        clients = cls._async_clients.get(loop)
        if clients is None:
            clients = cls._async_clients[loop] = LoopClients()
            await clients.close_with_the_loop()
        making = clients.making
        task = making.get(conn_id)
        if task is None:
            task = making[conn_id] = loop.create_task(cls._make_async_client(conn_id))
            task.add_done_callback(lambda done: _failed(done) and making.pop(conn_id, None))
        if task.done():
            return task.result()
        return await asyncio.shield(task)

    @classmethod
    async def _make_async_client(cls, conn_id: str) -> AsyncFlowRunsClient:
        conn = await cls.aget_connection(conn_id)
        # Building the TLS context reads the CA bundle from disk: keep that off the event loop.
        return await asyncio.to_thread(AsyncFlowRunsClient, *platform_from_connection(conn))

    @classmethod
    async def close_async_clients(cls) -> None:
        """Close the running loop's shared clients now, for programs that end their event loop without
        ``asyncio.run`` (which closes them itself, see ``LoopClients``)."""
        clients = cls._async_clients.pop(asyncio.get_running_loop(), None)
        if clients is not None:
            await clients.aclose()


class LoopClients:
    """The async clients of one event loop, by connection id, shared by its triggers until the loop shuts down.

    ``asyncio.run``, which runs the triggerer's event loop and each trigger ``airflow dags test`` runs inline,
    closes every asynchronous generator still open before it closes the loop (``loop.shutdown_asyncgens``). One
    such generator, opened with the loop's first client, closes the clients then, while the loop can still run
    their close; without it their aiohttp sessions outlive the loop and are reported as "Unclosed client
    session" and "Unclosed connector" when collected.
    """

    def __init__(self) -> None:
        self.making: dict[str, asyncio.Task[AsyncFlowRunsClient]] = {}
        self._closer = self._closed_at_shutdown()

    async def close_with_the_loop(self) -> None:
        """Open the generator that closes the clients, which registers it with the running loop."""
        await anext(self._closer)

    async def aclose(self) -> None:
        await self._closer.aclose()

    async def _closed_at_shutdown(self) -> AsyncGenerator[None]:
        try:
            yield
        finally:
            for task in list(self.making.values()):  # a client failing to be made meanwhile leaves the dict
                if task.done() and not _failed(task):
                    await task.result().aclose()


def _failed(task: asyncio.Task[Any]) -> bool:
    return task.cancelled() or task.exception() is not None


def platform_hook(facts: PlatformFacts) -> type[FlowRunsHook]:
    """The hook class that registers one platform's connection type (``{label}Hook``, as the provider info names
    it); it behaves exactly like ``FlowRunsHook``, with the platform's connection form for UIs before 3.2."""
    hook = type(
        f"{facts.label}Hook",
        (FlowRunsHook,),
        {
            "__module__": __name__,
            "__doc__": f"Registers the ``{facts.name}`` connection type; behaves exactly like ``FlowRunsHook``.",
            "conn_type": facts.name,
            "hook_name": facts.label,
            "default_conn_name": facts.default_conn_id,
        },
    )
    return has_connection_form(hook)


_PLATFORM_HOOKS: dict[str, type[FlowRunsHook]] = {}


def __getattr__(name: str) -> type[FlowRunsHook]:
    """``TableFlowHook``, ``ExtendHook``, ...: one hook class per registered platform, made on first use, so a
    platform registered later gets its hook too."""
    if name in _PLATFORM_HOOKS:
        return _PLATFORM_HOOKS[name]
    for facts in registered():
        if facts.hook_class_name == f"{__name__}.{name}":
            hook = _PLATFORM_HOOKS[name] = platform_hook(facts)
            return hook
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
