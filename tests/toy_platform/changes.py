"""How the asset watcher finds Toy runs that changed: the listing is newest first by creation, and a run's
``updated_at`` is its last status change."""

from airflow_flowruns.platforms.changes import NOT_FINAL, ChangeSource, updated_at

CHANGES = ChangeSource(updated_at("updated_at"), NOT_FINAL, order="created")
