"""Where a batch's runs stand, from one walk over the flow's listing: the newest run of each document of a
shard, and how many are in each state.

The worker takes one census to resume (which documents have a run, in which state) and one to report (the
manifest); the trigger takes one per poll to count. A run belongs to the shard when the key the platform
shows for it (``Platform.task_key_of``: metadata, user id, or a keyed file name) is one of the shard's run
keys; the walk lists only the runs created since the batch's first start, newest first where the platform
sorts so, and holds one page at a time. A listing cut short by its bounds raises
``FlowRunsListingError``: a document it did not show may have a live run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from airflow_flowruns.batch.documents import BatchKeys
from airflow_flowruns.platforms.base import FlowRun, Platform, RunState
from airflow_flowruns.platforms.usage import Usage
from airflow_flowruns.starting import RESTART_STATES

if TYPE_CHECKING:
    from airflow_flowruns.hooks.flow_run import FlowRunsHook


@dataclass(frozen=True)
class Seen:
    """The newest run of one document, as the listing showed it."""

    run_id: str
    state: RunState
    status: str
    created_at: datetime | None
    usage: Usage | None = None
    """What the listing says the run consumed, where its items carry it."""
    ended_at: datetime | None = None
    """When the run reached its final state, where the listing says: ``time_to_settle`` of the run."""

    def newer_than(self, other: Seen) -> bool:
        """Whether this run replaced ``other``. A document has at most one run that did not fail or get
        cancelled (a run is re-run only after it ended so), and that one is the newest whatever the clocks
        say; between ended runs the later created wins (the platforms' times can tie to the second)."""
        alive, other_alive = self.state not in RESTART_STATES, other.state not in RESTART_STATES
        if alive != other_alive:
            return alive
        if self.created_at is None or other.created_at is None:
            return self.run_id > other.run_id
        return (self.created_at, self.run_id) > (other.created_at, other.run_id)


@dataclass
class Census:
    """The shard's runs by run key, newest per document; ``runs`` counts every run of the shard seen."""

    keys: BatchKeys
    platform: Platform
    ignored: frozenset[str] = frozenset()
    """Run keys of documents no longer in the batch (a file renamed or removed between tries): not counted."""
    newest: dict[str, Seen] = field(default_factory=dict)
    runs: int = 0

    def add(self, run: FlowRun) -> None:
        run_key = self.platform.task_key_of(run)
        if run_key is None or run_key in self.ignored or not self.keys.owns_run_key(run_key):
            return
        self.runs += 1
        seen = Seen(run.id, run.state, run.status, run.created_at, run.usage, run.ended_at)
        known = self.newest.get(run_key)
        if known is None or seen.newer_than(known):
            self.newest[run_key] = seen

    def strays(self, run_keys: set[str]) -> list[str]:
        """The run keys seen that are none of ``run_keys`` (the batch's documents now)."""
        return sorted(set(self.newest) - run_keys)

    def counts(self) -> Counter[str]:
        return Counter(seen.state.value for seen in self.newest.values())


def take_census(
    hook: FlowRunsHook,
    flow_id: str,
    keys: BatchKeys,
    since: datetime | None,
    walks: int = 1,
    ignored: frozenset[str] = frozenset(),
) -> Census:
    """A census from the worker. ``walks=2`` merges two walks, for a lookup that decides which documents were
    never started: a listing whose order is not documented (Noxus) can skip a run that changes while it is
    walked, and a second walk catches what the first missed."""
    census = Census(keys, hook.platform, ignored)
    for _ in range(walks):
        for run in hook.list_runs(flow_id, created_after=since, page_size=hook.platform.largest_page):
            census.add(run)
    return census


async def atake_census(
    hook: FlowRunsHook, flow_id: str, keys: BatchKeys, since: datetime | None, ignored: frozenset[str]
) -> Census:
    """A census from the triggerer, on the connection's shared async client."""
    client = await hook.get_async_client(hook.flowruns_conn_id)
    census = Census(keys, client.platform, ignored)
    async for run in hook.alist_runs(flow_id, created_after=since, page_size=client.platform.largest_page):
        census.add(run)
    return census
