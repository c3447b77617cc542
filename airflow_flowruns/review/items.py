"""The Required Action of a task instance, written and read through Airflow's task SDK.

Airflow 3.1 added human-in-the-loop: one Required Action (a HITL detail) per task instance, created by the task,
answered in the UI or REST API. The calls go through the process's supervisor, which is why they are plain
functions of the task instance id; a worker's supervisor only creates an item, a triggerer's reads and answers
one, so everything after the item is created happens in the trigger.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async

from airflow_flowruns.review.ask import NOTE, Ask

if TYPE_CHECKING:
    from uuid import UUID

log = logging.getLogger(__name__)


def open_item(ti_id: UUID, ask: Ask, assigned: list[dict[str, str]] | None) -> None:
    """Create the task instance's Required Action; a task resumed after a restart finds its own again."""
    from airflow.sdk import Param
    from airflow.sdk.execution_time.hitl import upsert_hitl_detail

    params = {
        name: Param(spec["value"], type=spec["schema"]["type"], description=spec["description"]).serialize()
        for name, spec in ask.params().items()
    }
    upsert_hitl_detail(
        ti_id=ti_id,
        options=ask.labels,
        subject=ask.subject,
        body=ask.body,
        defaults=None,
        multiple=False,
        params=params,
        assigned_users=assigned,  # type: ignore[arg-type]  # the SDK's HITLUser is a TypedDict of these keys
    )


async def aread_answer(ti_id: UUID) -> dict[str, Any] | None:
    """The answer recorded on the Required Action, in the shape Airflow resumes a task with; None if none yet.

    Only a triggerer's supervisor serves this read (a worker's refuses it), so only the trigger calls it."""
    from airflow.sdk.execution_time.hitl import get_hitl_detail_content_detail

    return _answer(await sync_to_async(get_hitl_detail_content_detail)(ti_id=ti_id))


async def aclose_item(ti_id: UUID, label: str, note: str) -> dict[str, Any] | None:
    """Answer the Required Action on the provider's behalf with ``label`` and ``note``, so no one is left with a
    stale item. Returns the answer a person recorded first, if one did: Airflow refuses a second answer, and
    that person's answer is the decision. Only a triggerer's supervisor serves this (see ``aread_answer``)."""
    from airflow.sdk.execution_time.hitl import update_hitl_detail_response

    try:
        await sync_to_async(update_hitl_detail_response)(ti_id=ti_id, chosen_options=[label], params_input={NOTE: note})
    except Exception as exc:  # Airflow answers 409 when the item already has an answer; read which
        answer = await aread_answer(ti_id)
        if answer is None:
            raise
        log.info("The Required Action was answered before it could be closed (%s).", type(exc).__name__)
        return answer
    return None


def _answer(detail: Any) -> dict[str, Any] | None:
    if not getattr(detail, "response_received", False) or not getattr(detail, "chosen_options", None):
        return None
    user = getattr(detail, "responded_by_user", None)
    return {
        "chosen_options": list(detail.chosen_options),
        "params_input": dict(detail.params_input or {}),
        "responded_at": detail.responded_at,
        "responded_by_user": {"id": user.id, "name": user.name} if user is not None else None,
    }
