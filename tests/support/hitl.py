"""Airflow's Required Actions (HITL details) kept in memory, with the rules of Airflow's API: one item per task
instance, one answer per item (a second one is refused, as the API answers 409), the answer read back whole.

``install`` puts it in place of the task SDK's three calls, for tests that run operators and triggers outside
a real Airflow; a test answers as a person would with :meth:`HitlStore.answer`. Code run inside
:meth:`HitlStore.worker` is refused reads and answers, as a worker's supervisor refuses them in a deployment
(only the triggerer's serves them).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from unittest.mock import MagicMock
from uuid import UUID, uuid4

import pytest
from pytest_mock import MockerFixture

from support.emulator import pushed, task_instance


class AnsweredAlready(RuntimeError):
    """What the task SDK raises for Airflow's 409: the item already has an answer."""


class RefusedInWorker(RuntimeError):
    """What a worker's supervisor answers a read or an answer of a Required Action with."""


@dataclass
class Item:
    options: list[str]
    subject: str
    body: str | None
    params: dict[str, Any]
    assigned_users: list[dict[str, str]] | None
    answer: dict[str, Any] | None = None


@dataclass
class HitlStore:
    items: dict[UUID, Item] = field(default_factory=dict)
    upserts: int = 0
    in_worker: bool = False
    variables: dict[str, str] = field(default_factory=dict)
    """Airflow Variables the task set (the review register), by key."""

    @contextmanager
    def worker(self) -> Iterator[None]:
        """Run the task's own code as a worker runs it: a Required Action may be created, not read or answered."""
        self.in_worker = True
        try:
            yield
        finally:
            self.in_worker = False

    def _refuse_in_worker(self) -> None:
        if self.in_worker:
            raise RefusedInWorker("Unhandled request: a worker may not read or answer a Required Action")

    def upsert(self, ti_id: UUID, options: list[str], subject: str, body: str | None = None, **rest: Any) -> None:
        self.upserts += 1
        if ti_id in self.items:
            self.items[ti_id].answer = None  # Airflow keeps the item and clears its answer
            return
        self.items[ti_id] = Item(options, subject, body, rest.get("params") or {}, rest.get("assigned_users"))

    def update(self, ti_id: UUID, chosen_options: list[str], params_input: dict[str, Any]) -> Any:
        self._refuse_in_worker()
        return self._respond(ti_id, chosen_options, params_input, None)

    def get(self, ti_id: UUID) -> Any:
        self._refuse_in_worker()
        answer = self.items[ti_id].answer
        if answer is None:
            return SimpleNamespace(response_received=False, chosen_options=None)
        user = answer["user"]
        return SimpleNamespace(
            response_received=True,
            chosen_options=answer["chosen_options"],
            params_input=answer["params_input"],
            responded_at=answer["at"],
            responded_by_user=SimpleNamespace(**user) if user else None,
        )

    def set_variable(self, key: str, value: str, description: str | None = None, **rest: Any) -> None:
        """``Variable.set`` as a worker's supervisor serves it (a worker may set one)."""
        self.variables[key] = value

    def answer(self, ti_id: UUID, option: str, params: dict[str, Any] | None = None, user: str = "ana") -> Any:
        """A person answers in the UI: the item's parameters as shown, with ``params`` changed."""
        shown = {name: spec["value"] for name, spec in self.items[ti_id].params.items()}
        return self._respond(ti_id, [option], {**shown, **(params or {})}, {"id": user, "name": user})

    def _respond(self, ti_id: UUID, options: list[str], params: dict[str, Any], user: dict[str, str] | None) -> Any:
        item = self.items[ti_id]
        if item.answer is not None:
            raise AnsweredAlready(f"Human-in-the-loop detail for Task Instance with id {ti_id} already exists.")
        unknown = set(options) - set(item.options)
        if unknown:
            raise ValueError(f"Invalid options {sorted(unknown)}")
        item.answer = {"chosen_options": options, "params_input": params, "user": user, "at": datetime.now(UTC)}
        return self.get(ti_id)


def install(monkeypatch: pytest.MonkeyPatch) -> HitlStore:
    """Serve the task SDK's Required Action calls, and the Variable the review register sets, from a store."""
    from airflow.sdk import Variable
    from airflow.sdk.execution_time import hitl

    store = HitlStore()
    monkeypatch.setattr(hitl, "upsert_hitl_detail", store.upsert)
    monkeypatch.setattr(hitl, "update_hitl_detail_response", store.update)
    monkeypatch.setattr(hitl, "get_hitl_detail_content_detail", store.get)
    monkeypatch.setattr(Variable, "set", store.set_variable)
    return store


def task_instance_with_item(mocker: MockerFixture) -> MagicMock:
    """A task instance with an id (its Required Action's key) whose XCom reads back what it pushed, as a task
    resumed from review reads its pending review."""
    made = task_instance(mocker, id=uuid4())
    made.xcom_pull.side_effect = lambda key, **_: (pushed(made).get(key) or [None])[-1]
    return made
