"""How the asset watcher finds StackAI runs that changed: the listing filters by state and by creation date
server-side, so a poll is one filtered listing from the window minus ``lookback``. Runs carry a creation time
and a latency only: a run reached its final state at its creation plus its latency, and ``running`` and
``needs_review`` cannot be watched."""

from airflow_flowruns.platforms.base import RunState
from airflow_flowruns.platforms.changes import ChangeSource, queued_since_creation

CHANGES = ChangeSource(queued_since_creation, frozenset({RunState.QUEUED}), order="filtered")
