"""How the asset watcher finds TableFlow runs that changed: the listing is newest first by creation and
filters by one status only, so it is read until runs are older than the watch window minus ``lookback``.
A run's last status change is its ``updated_at``."""

from airflow_flowruns.platforms.changes import NOT_FINAL, ChangeSource, updated_at

CHANGES = ChangeSource(updated_at("updated_at"), NOT_FINAL, order="created")
