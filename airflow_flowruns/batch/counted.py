"""Which of a batch's runs a try counts in the provider's metrics (``runs_settled.<state>``, ``time_to_settle``,
``credits``), and the counting.

A try counts when it reports (``Reporter.report``): each document's newest run that is final and that this try
started. Each run is then counted once, by the try that started it, and a retry never counts again what an
earlier try counted. The report, not the wait, is where a batch counts: it happens once per try and holds every
document's final run with its usage (from the run read for its landing, else from the listing), where the
batch's trigger polls many times, may be restarted, and keeps no record of what it would have counted.

Which runs this try started:

- with a ledger (a task state store, Airflow 3.3+), exactly the documents its pages of this try name: the
  newest run must be the one the start answered with, or, where the start named no run (Extend's batch start
  answers with a batch id, and accepts the whole batch or none of it), the document's newest run;
- without one, on the task's first try, every run of the batch: no earlier try started any;
- without one, on a later try, a run created at or after the second the try began (``try_began``, the worker's
  clock in UTC, which the deferral carries). The whole second, because TableFlow times runs in whole seconds: a
  run started in the second the try began would otherwise look older than the try. No margin before that: a
  run created earlier is an earlier try's, and counting it twice is the error a metric must not make; a
  platform clock behind the worker's by more than the rest of that second leaves out the runs started in the
  lag. A run whose creation the listing does not date, or a try whose start was not carried (a resume that
  lost the deferral's state), counts nothing: what cannot be told to be this try's is not counted.

Not counted by any batch try: a run still under way when the try reports (its deadline passed; a run in review,
which with ``on_review="airflow"`` its review task counts if it sees the run end), and the runs of a try that
ended before reporting (a worker killed, ten starts refused in a row), which a retry follows but did not start.
A platform that runs synchronously (StackAI) answers the start with the settled run, and the start counted it
(``FlowRunsHook.start_run``): a batch there counts nothing more.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from airflow_flowruns import metrics
from airflow_flowruns.batch.census import Seen
from airflow_flowruns.platforms.usage import Usage

if TYPE_CHECKING:
    from airflow_flowruns.batch.ledger import LedgerView
    from airflow_flowruns.hooks.flow_run import FlowRunsHook


@dataclass(frozen=True)
class SettledCounter:
    """Counts the final runs one try of a batch started; called with each document as the report walks them."""

    platform: str
    conn_id: str
    try_number: int
    began: datetime | None
    """The second the try began (UTC), or None where it is unknown."""
    ledger: Mapping[str, str] | None = None
    """Documents this try started, by the ledger, with their run ids (``""`` where the start named none);
    None where no ledger is kept."""

    def __call__(self, document_key: str, seen: Seen, usage: Usage | None) -> None:
        """Count the document's newest run ``seen`` if it is final and this try started it; ``usage``: its
        usage as the manifest item has it."""
        if seen.state.is_final and self.started(document_key, seen):
            credits = metrics.credits_of(usage)
            metrics.settled_as(self.platform, self.conn_id, seen.state, seen.created_at, seen.ended_at, credits)

    def started(self, document_key: str, seen: Seen) -> bool:
        """Whether this try started the run ``seen`` of the document (see the module's docstring)."""
        if self.ledger is not None:
            run_id = self.ledger.get(document_key)
            return run_id is not None and run_id in ("", seen.run_id)
        if self.try_number == 1:
            return True
        return self.began is not None and seen.created_at is not None and seen.created_at >= self.began


def settled_counter(
    hook: FlowRunsHook, try_number: int, try_began: str | None, ledger: LedgerView | None
) -> SettledCounter | None:
    """The counter of a try that began at ``try_began`` (an ISO time, as the deferral carries it), with the
    ledger's view where one is kept; None on a platform whose start counted its settled run."""
    if hook.platform.synchronous:
        return None
    began = datetime.fromisoformat(try_began).replace(microsecond=0) if try_began else None
    return SettledCounter(
        hook.platform.name,
        hook.flowruns_conn_id,
        try_number,
        began,
        dict(ledger.this_try) if ledger is not None else None,
    )
