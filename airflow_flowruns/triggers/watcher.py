"""The asset watcher: an event for every run that reaches a watched state, whoever started the run.

``FlowRunEventTrigger`` is a ``BaseEventTrigger``: put it in an ``AssetWatcher`` and each run of the
connection's platform (optionally of one flow) that reaches one of ``states`` after the watcher started
becomes an asset event, scheduling the DAGs that consume the asset. Runs started in the vendor's web app,
by an e-mail integration or by another tool are announced like the runs a DAG started.

Delivery is **at least once**. The watcher's *position* (a watermark time and the runs announced just
around it) says what has been announced. Airflow stores a trigger's events asynchronously: the runner
queues a yielded event, hands it to the triggerer's supervisor at its next state sync, and the supervisor
writes it to the metadata database later still. A position written right after ``yield`` could therefore
reach the database before the event does, and a triggerer killed in between would lose the event. So on
Airflow 3.3+, where the triggerer injects the asset's state store, the watcher runs as a shared stream in
*ack mode*: Airflow calls ``advance`` only once every event it covers is confirmed stored, and only then
is the position written to the asset's state store. A watcher restarted elsewhere reads the position and
announces again what was not confirmed (same ``dedup_key``): consumers skip keys they have handled.

Without a state store (Airflow before 3.3, or a watcher run by hand) the position lives in memory: every
start of the watcher begins at ``start_from``. With ``"now"``, runs that reach a watched state while no
triggerer runs the watcher are not announced; with a timestamp, every start announces again every run
since then.

Nothing a platform answers stops the watcher for good: each poll reads the listing at most as far as
``FlowRunEventTrigger.walk_bounds`` allow (a listing that never ends is cut there, logged, and read
again at the next poll), the watermark never passes the watcher's own clock (a run stamped in the future
is announced once, see ``CLOCK_SKEW``), and no text from the
platform reaches an event or the log with the connection's secrets in it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from airflow_flowruns.client.errors import scrub
from airflow_flowruns.client.listing import LISTING_BOUNDS, WalkBounds
from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.hooks.default_connection import adefault_connection, one_conn_id
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms import PLATFORMS, change_source
from airflow_flowruns.platforms.base import Platform, RunState
from airflow_flowruns.platforms.changes import ChangeSource
from airflow_flowruns.triggers.watch_candidates import OldestRuns, Poll
from airflow_flowruns.triggers.watch_payload import dedup_key, event_payload
from airflow_flowruns.triggers.watch_position import Position, PositionStore
from airflow_flowruns.version_compat import AIRFLOW_V_3_3_PLUS, missing_feature
from airflow_flowruns.waiting import check_poll_interval

try:  # Airflow 3.3+: events confirmed stored before the position moves
    from airflow.triggers.shared_stream import AdvanceItem, SharedStreamProducer
except ImportError:  # pragma: no cover - older Airflow runs the watcher through run()
    SharedStreamProducer = object  # type: ignore[misc,assignment]
    AdvanceItem = Any  # type: ignore[misc,assignment]

LATE_SECONDS = 300.0
"""How late a run may show up in a listing after it entered its state (analytics lag, clocks apart): each
poll looks this far behind the watermark, and the runs announced in that span are remembered."""
IDLE_SAVE_EVERY = timedelta(minutes=1)
"""While nothing is announced, the stored position moves on at most this often (a state-store write)."""
MAX_BACKOFF_INTERVALS = 10
"""After failing polls the watcher waits up to this many poll intervals before the next."""
WALK_INTERVALS = 2
"""One poll reads the listing for at most this many poll intervals (within the bounds below)."""
WALK_MIN_SECONDS = 60.0
"""However short the poll interval, a poll may read the listing this long: enough for a long genuine
listing (200 pages at 300 ms). At most it reads for the listing's own deadline, ``LISTING_BOUNDS.seconds``."""


class FlowRunEventTrigger(BaseEventTrigger):
    """Yields one event per run of ``conn_id`` (of ``flow_id`` when given) that reaches one of ``states``.

    :param conn_id: a TableFlow, Extend, Noxus or StackAI connection; ``flowruns_conn_id``, the operators' name
        for it, is taken too (one of them). Without either, ``flowruns_default`` if it exists, else the one
        ``<platform>_default`` connection that exists, looked up by the triggerer at the first poll (a missing or
        ambiguous default is logged as an error at each poll, until a connection is created or named).
    :param flow_id: only runs of this flow (required on StackAI, which lists runs per flow).
    :param states: normalized states to announce; default the final ones (succeeded, failed, cancelled).
    :param start_from: ``"now"`` (runs entering a state after the watcher first started) or an ISO 8601
        timestamp. Only read when the watcher has no stored position.
    :param poll_interval: seconds between polls, at least ``[flowruns] min_poll_interval``.
    :param max_events_per_poll: a longer backlog is announced over several polls, oldest first.
    :param lookback_hours: how long a run may take from its creation to a watched state and still be
        announced, on platforms whose listing is ordered or filtered by creation (TableFlow, StackAI).

    The payload of each event: ``platform``, ``flow_id``, ``run_id``, ``state``, ``status`` (raw), ``url``,
    ``created_at``, ``ended_at``, ``task_key`` (set when an Airflow task started the run) and ``dedup_key``,
    the same for every announcement of one run in one state.
    """

    def __init__(
        self,
        *,
        conn_id: str | None = None,
        flowruns_conn_id: str | None = None,
        flow_id: str | None = None,
        states: Iterable[str] = ("succeeded", "failed", "cancelled"),
        start_from: str = "now",
        poll_interval: float = 30.0,
        max_events_per_poll: int = 100,
        lookback_hours: float = 24.0,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # BaseTrigger.__init__ is unannotated
        # The connection as given, serialized as given (None: the default connection), so the trigger Airflow
        # stores for the watcher, and the state-store key of its position, do not change when it is resolved.
        self.conn_id = one_conn_id(conn_id, flowruns_conn_id)
        self._watched_conn_id = self.conn_id
        """The connection polled: ``conn_id``, or the default connection once the triggerer looked it up."""
        self.flow_id = flow_id or None
        try:
            self.states = sorted({RunState(state).value for state in states})
        except ValueError as exc:
            raise FlowRunsConfigError(f"{exc}; states are: {', '.join(RunState)}.") from None
        if not self.states:
            raise FlowRunsConfigError("states is empty: name at least one state to watch.")
        self.start_from = _check_start(start_from)
        self.poll_interval = check_poll_interval(poll_interval)
        if max_events_per_poll < 1 or lookback_hours <= 0:
            raise FlowRunsConfigError("max_events_per_poll and lookback_hours must be positive.")
        self.max_events_per_poll = int(max_events_per_poll)
        self.lookback_hours = float(lookback_hours)
        self._platform: Platform | None = None
        """The connection's platform at the last poll, whose secrets are scrubbed from the watcher's log."""

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "flow_id": self.flow_id,
                "states": self.states,
                "start_from": self.start_from,
                "poll_interval": self.poll_interval,
                "max_events_per_poll": self.max_events_per_poll,
                "lookback_hours": self.lookback_hours,
            },
        )

    @property
    def walk_bounds(self) -> WalkBounds:
        """How far one poll reads the listing: the pages and runs of any listing (``LISTING_BOUNDS``), for
        ``WALK_INTERVALS`` poll intervals, at least ``WALK_MIN_SECONDS`` and at most the listing's own
        deadline. A listing that never ends then costs one bounded poll per interval, not a poll that never
        returns."""
        seconds = min(LISTING_BOUNDS.seconds, max(WALK_MIN_SECONDS, WALK_INTERVALS * self.poll_interval))
        return replace(LISTING_BOUNDS, seconds=seconds)

    @property
    def position_key(self) -> str:
        """The state-store key of this watcher's position, from what it announces (not how often it polls),
        so a watcher given another poll interval carries on where it was; several watchers may share an asset."""
        what = json.dumps([self.conn_id, self.flow_id, self.states])
        return f"flowruns_watcher_position_{hashlib.sha256(what.encode()).hexdigest()[:16]}"

    # --- standalone: position in memory ------------------------------------------------------------

    async def run(self) -> AsyncIterator[TriggerEvent]:
        if not AIRFLOW_V_3_3_PLUS:
            missing_feature(
                "Keeping an asset watcher's position in the asset's state store (each start begins at start_from)",
                "3.3",
            )
        async for payload, _ in self.announcements(self.initial_position()):
            yield TriggerEvent(payload)

    def initial_position(self) -> Position:
        # Whole seconds: some platforms (TableFlow) time runs to the second, and a run that ended in the second
        # the watcher started must not fall before it.
        now = datetime.now(UTC).replace(microsecond=0)
        start = now if self.start_from == "now" else datetime.fromisoformat(self.start_from)
        return Position.starting(start)

    # --- Airflow 3.3+: position in the asset's state store, moved once events are stored ------------

    def shared_stream_key(self) -> Hashable | None:
        """A stream of this watcher alone, in ack mode, where the triggerer gave it the asset's state store
        (Airflow 3.3+; before, triggers have no ``asset_state_store`` and the triggerer runs ``run()``)."""
        if getattr(self, "asset_state_store", None) is None:
            return None
        key = _stream_key(self.serialize()[1])
        _ACK_STREAM_WATCHERS[key] = self
        return key

    @classmethod
    def create_shared_stream_producer(cls, kwargs: dict[str, Any]) -> SharedStreamProducer:
        watcher = _ACK_STREAM_WATCHERS[_stream_key(kwargs)]
        return AnnouncementProducer(watcher, PositionStore(watcher.asset_state_store, watcher.position_key))

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        async for payload in shared_stream:
            yield TriggerEvent(payload)

    # --- polling ------------------------------------------------------------------------------------

    async def announcements(
        self, position: Position, on_settled: Callable[[Position], Awaitable[None]] | None = None
    ) -> AsyncIterator[tuple[dict[str, Any], Position]]:
        """Poll forever: each new announcement with the position that covers it and every earlier one.

        ``on_settled`` gets the position after each poll that read the whole listing and announced
        everything it found. Never ends and never raises but on cancellation: a failed poll is logged and
        the next one waits longer, up to ``MAX_BACKOFF_INTERVALS`` intervals.
        """
        failures = 0
        while True:
            started = datetime.now(UTC)
            try:
                polled = await self.poll(position)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                wait = self.poll_interval * min(2 ** (failures - 1), MAX_BACKOFF_INTERVALS)
                # A setting the platform refuses (a flow it does not have) is logged as an error, still not fatal:
                # the connection or the flow may be fixed without redeploying the DAG.
                report = self.log.error if isinstance(exc, FlowRunsConfigError) else self.log.warning
                report(
                    "Watching the runs of %s failed for now (%s: %s); next poll in %.1f s.",
                    self._watched,
                    type(exc).__name__,
                    self._scrubbed(str(exc)),
                    wait,
                )
                await asyncio.sleep(wait)
                continue
            failures = 0
            for payload, position in polled.announced:
                yield payload, position
            if polled.saw_everything:
                position = position.settled(started, LATE_SECONDS)
                if on_settled is not None:
                    await on_settled(position)
            # A backlog drains at one capped poll per turn of the loop, never faster than the pacing allows; a
            # listing cut short is read again only after the interval.
            backlog = polled.more and polled.cut_short is None
            await asyncio.sleep(0 if backlog else self.poll_interval)

    async def poll(self, position: Position) -> Poll:
        """One poll, reading the listing no further than ``walk_bounds``: the oldest new announcements
        (at most ``max_events_per_poll``), each with its position."""
        client = await FlowRunsHook.get_async_client(await self.watched_conn_id())
        platform = self._platform = client.platform
        source = _source(platform.name, self.states)
        wanted = frozenset(RunState(state) for state in self.states)
        floor = position.floor(LATE_SECONDS)
        now = datetime.now(UTC)
        lookback = timedelta(hours=self.lookback_hours)
        scan = source.runs_since(client, self.flow_id, wanted, floor, lookback, bounds=self.walk_bounds)
        oldest = OldestRuns(self.max_events_per_poll)
        async for run in scan:
            at = source.changed_at(run)
            key = scrub(platform, dedup_key(run))
            if run.state in wanted and at is not None and at >= floor and not position.announced(key):
                oldest.offer(at, key, run)
        announced = []
        for at, key, run in oldest:
            whole = scan.cut_short is None
            position = position.after(key, at, LATE_SECONDS, now) if whole else position.noted(key, at)
            announced.append((await event_payload(client, source, run, key, self.flow_id, self.log), position))
        if scan.cut_short is not None:
            self.log.warning(
                "Watching the runs of %s read only part of the listing (%s); %d runs announced, the "
                "position stays where it was, and the next poll reads the listing again.",
                self._watched,
                scan.cut_short,
                len(announced),
            )
        return Poll(announced, scan.cut_short, oldest.more)

    async def watched_conn_id(self) -> str:
        """``conn_id``, or the default connection's id, looked up once, on the triggerer's async lookup."""
        if self._watched_conn_id is None:
            found = await adefault_connection(FlowRunsHook.default_conn_name, FlowRunsHook.aget_connection)
            self._watched_conn_id = found.conn_id
            self.log.info("No connection id was given: watching the runs of the default connection %r.", found.conn_id)
        return self._watched_conn_id

    @property
    def _watched(self) -> str:
        """The connection, as the log names it."""
        return f"connection {self._watched_conn_id!r}" if self._watched_conn_id else "the default connection"

    def _scrubbed(self, text: str) -> str:
        return text if self._platform is None else scrub(self._platform, text)


def _source(platform: str, states: Sequence[str]) -> ChangeSource:
    if platform not in PLATFORMS:
        raise FlowRunsConfigError(f"platform {platform!r} is not one of: {', '.join(sorted(PLATFORMS))}.")
    source = change_source(platform)
    source.check_states(platform, [RunState(state) for state in states])
    return source


def _stream_key(kwargs: dict[str, Any]) -> Hashable:
    """One ack-mode stream per trigger: Airflow keeps one trigger per class and kwargs."""
    return ("airflow_flowruns.watcher", json.dumps(kwargs, sort_keys=True))


def _check_start(start_from: str) -> str:
    if start_from == "now":
        return start_from
    try:
        start = datetime.fromisoformat(str(start_from))
    except ValueError:
        raise FlowRunsConfigError(
            f"start_from must be 'now' or an ISO 8601 timestamp such as 2026-01-31T00:00:00+00:00, not {start_from!r}."
        ) from None
    return (start if start.tzinfo else start.replace(tzinfo=UTC)).isoformat()


_ACK_STREAM_WATCHERS: weakref.WeakValueDictionary[Hashable, FlowRunEventTrigger] = weakref.WeakValueDictionary()
"""The watcher behind each ack-mode stream: Airflow makes the producer from kwargs alone, and the state
store the triggerer injected lives on the watcher."""


class AnnouncementProducer(SharedStreamProducer):
    """Feeds one watcher's announcements to Airflow and moves its stored position once they are stored.

    ``advance`` gets, in order, the announcements whose events Airflow confirmed stored; the position
    that came with the last of them covers them all. An announcement that was not cleanly stored
    (an ack timeout) stops the position for the life of this stream: the next start announces it again.
    A poll with nothing new moves the position only when no announcement awaits its confirmation.
    """

    def __init__(self, watcher: FlowRunEventTrigger, store: PositionStore) -> None:
        self.watcher = watcher
        self.store = store
        self.pending = 0
        self.stuck = False
        self.saved: Position | None = None

    async def open_stream(self) -> AsyncIterator[tuple[Any, Any]]:
        start = await self._load()
        async for payload, covered in self.watcher.announcements(start, on_settled=self._settled):
            self.pending += 1
            yield payload, covered

    async def _load(self) -> Position:
        """The stored position, or the start (stored at once: nothing is announced before it); a stored
        position later than the clock allows is moved back (``Position.clamped``) and stored so."""
        attempt = 0
        while True:
            try:
                loaded = await self.store.load()
                start = self.watcher.initial_position() if loaded is None else loaded.clamped(datetime.now(UTC))
                if start is not loaded:
                    await self.store.save(start)
                self.saved = start
                return start
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                wait = min(self.watcher.poll_interval * attempt, self.watcher.poll_interval * MAX_BACKOFF_INTERVALS)
                self.watcher.log.warning("Reading the watcher's position failed (%s); retrying in %.0f s.", exc, wait)
                await asyncio.sleep(wait)

    async def _settled(self, position: Position) -> None:
        """After a poll with nothing left to announce: move the stored position on, at most once a minute
        while nothing was announced (a restart then only reads that minute again)."""
        if self.pending or self.stuck:
            return
        saved = self.saved
        if saved is None or saved.seen != position.seen or position.since - saved.since >= IDLE_SAVE_EVERY:
            await self._save(position)

    async def advance(self, batch: Sequence[AdvanceItem]) -> None:
        covered: Position | None = None
        for item in batch:
            self.pending -= 1
            if not item.outcome.is_clean:
                if not self.stuck:
                    self.watcher.log.warning(
                        "An announcement was not confirmed stored; the position stays before it until restart."
                    )
                self.stuck = True
            if not self.stuck:
                covered = item.broker_payload
        if covered is not None:
            await self._save(covered)

    async def _save(self, position: Position) -> None:
        """Write the position; a failed write only means more announcements repeated after a restart."""
        try:
            await self.store.save(position)
            self.saved = position
        except Exception as exc:
            self.watcher.log.warning("Storing the watcher's position failed (%s); it is written again later.", exc)
