"""How the commands print: plain columns for people, JSON for programs (``--output json``).

Only what the platform said about its runs is printed, and the connection's secrets are never among it: a run's
fields come from the platform module (``FlowRun``), and every message from the provider's scrubbed errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from airflow_flowruns.platforms.base import FlowRun

RUN_COLUMNS = ("RUN", "FLOW", "STATE", "STATUS", "CREATED", "CREDITS")


def emit_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def emit_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Left-aligned columns as wide as their widest cell, two spaces apart."""
    lines = [list(header), *(list(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def emit_record(fields: Mapping[str, Any]) -> None:
    """One object as ``name  value`` lines."""
    emit_table(("FIELD", "VALUE"), ((name, text(value)) for name, value in fields.items()))


def run_row(run: FlowRun) -> list[str]:
    """A run's cells under ``RUN_COLUMNS``."""
    return [run.id, run.flow_id or "-", run.state.value, run.status, text(run.created_at), text(credits_of(run))]


def credits_of(run: FlowRun) -> float | None:
    """The credits the platform says the run cost, where its ``usage`` names them (Extend); None elsewhere."""
    usage = getattr(run, "usage", None)
    value = usage.get("credits") if isinstance(usage, Mapping) else getattr(usage, "credits", None)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def age_of(run: FlowRun, now: datetime) -> float | None:
    """Seconds since the run was created, where the platform says when."""
    return (now - run.created_at).total_seconds() if run.created_at is not None else None


def age_text(seconds: float | None) -> str:
    """``3d 4h``, ``2h 5m``, ``45s``: the two largest units, enough to tell a stale run from a fresh one."""
    if seconds is None:
        return "-"
    left = max(0, int(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
    return " ".join(parts[:2])


def text(value: Any) -> str:
    """A cell: ``-`` for nothing, times in UTC to the second, the rest as Python writes it."""
    if value is None or value == "":
        return "-"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)
