"""How the asset watcher finds Noxus runs that changed: the listing filters neither by state nor by date and
documents no order, so every poll is a full scan of the workflow's runs (up to 100 per page), filtered
client-side; give Noxus watchers a longer poll interval. Runs carry only ``created_at`` and ``finished_at``
(the SDK's ``Run`` has no start or update time), so ``running`` and ``needs_review`` cannot be watched."""

from airflow_flowruns.platforms.base import RunState
from airflow_flowruns.platforms.changes import ChangeSource, queued_since_creation

CHANGES = ChangeSource(queued_since_creation, frozenset({RunState.QUEUED}), order="none")
