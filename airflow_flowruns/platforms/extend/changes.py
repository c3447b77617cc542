"""How the asset watcher finds Extend runs that changed: the listing sorts by ``updatedAt`` (newest first),
so a poll reads only what changed since the window opened. Listing items are summaries without
``metadata``, so the task key of an announced run is read from the run itself (one call per event)."""

from airflow_flowruns.platforms.changes import NOT_FINAL, ChangeSource, updated_at

CHANGES = ChangeSource(
    updated_at("updatedAt"),
    NOT_FINAL,
    order="updated",
    task_key_needs_run=True,
    sort_params={"sortBy": "updatedAt", "sortDir": "desc"},
)
