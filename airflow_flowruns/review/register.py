"""Who decided a run's review in Airflow, kept where any task of the deployment can read it again.

A decision taken in Airflow lives in the reviewing task instance's XCom, which only a task that knows that task
instance can read, and the platform's run keeps no trace of it (a platform records only its own reviewers). The
export operator lists runs by time, across DAGs, and must say who reviewed each one. So the reviewing task also
writes the decision to an Airflow Variable named after the run, which the export reads back by the run's id:
the one store the task SDK lets any task read by a key it can compute, on every Airflow line the provider runs on.

Only who, when, where and what is kept, never the reviewer's note or the edited values (those stay in the task's
XCom and ``outputs.json``): Variables are readable by more people than a DAG's XCom.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import Variable

if TYPE_CHECKING:
    from airflow_flowruns.review.ask import Decision

REGISTER_PREFIX = "flowruns_review"
"""Every register Variable's key starts with this, then ``.{platform}.{run id}``."""
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")


def register_key(platform: str, run_id: str) -> str:
    """The Variable key of a run's decision: the run id as it is where it is plain, else a hash of it, so a key
    always keeps to the characters and the length every secrets backend takes."""
    name = run_id if _PLAIN_ID.fullmatch(run_id) else "h-" + hashlib.sha256(run_id.encode()).hexdigest()[:40]
    return f"{REGISTER_PREFIX}.{platform}.{name}"


def register_entry(decision: Decision, task: dict[str, Any]) -> dict[str, Any]:
    """What the register keeps of a decision taken in Airflow: who, when, what, and the task instance that
    asked (``dag_id``, ``task_id``, ``run_id``, ``map_index``), where the full decision is in XCom ``review``."""
    return {
        "where": decision.where,
        "decision": decision.decision,
        "by": decision.by,
        "at": decision.at,
        "task": task,
    }


def record_review(platform: str, run_id: str, entry: dict[str, Any]) -> None:
    """Keep ``entry`` as the run's decision; a later decision on the same run (a cleared task asked again)
    replaces it."""
    Variable.set(
        register_key(platform, run_id),
        json.dumps(entry, sort_keys=True),
        description=f"Review of {platform} run {run_id} decided in Airflow (airflow-flowruns; the export reads it).",
    )


def recorded_review(platform: str, run_id: str) -> dict[str, Any] | None:
    """The decision kept for the run, or None when none was taken in Airflow (or it cannot be read back)."""
    value = Variable.get(register_key(platform, run_id), default=None)
    if not isinstance(value, str):
        return None
    try:
        entry = json.loads(value)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


__all__ = ["REGISTER_PREFIX", "record_review", "recorded_review", "register_entry", "register_key"]
