"""What one platform's part of the emulator serves, in the words a user sets a DAG up with.

Each platform's emulator module describes its own flows with these (its ``served(config)``); the discovery call
and the start-up banner (``.discovery``) read them through the registry, so a platform added to the
registry is listed with no change there.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from airflow_flowruns.emulator.config import Scenario


class ServedField(BaseModel):
    """A file field or an input of a flow: the key a task gives it under (``files`` or ``inputs``)."""

    name: str
    required: bool = True
    about: str = ""
    """What it takes, e.g. ``pdf or image, up to 50 MiB``."""


class ServedFlow(BaseModel):
    id: str
    """The task's ``flow_id``."""
    name: str
    files: list[ServedField] = Field(default_factory=list)
    inputs: list[ServedField] = Field(default_factory=list)
    outcome: str
    """What a run of the flow does, e.g. ``completes after about 1 s``."""


class ServedPlatform(BaseModel):
    """A platform's flows, and what its connection needs beyond the emulator's host and key."""

    flows: list[ServedFlow]
    extra: dict[str, str] = Field(default_factory=dict)
    """Connection extras to set, e.g. StackAI's ``org_id``."""
    notes: list[str] = Field(default_factory=list)


def outcome_of(scenario: Scenario) -> str:
    """What a run with this scenario does, in words: when it ends, how, and whether it stops for review."""
    took = scenario.queued_seconds + scenario.processing_seconds
    if scenario.processing_jitter_seconds:
        took += scenario.processing_jitter_seconds / 2
    ending = f"fails ({scenario.error})" if scenario.outcome == "failed" else "completes"
    if not scenario.review:
        return f"{ending} after about {took:g} s"
    if scenario.review_seconds is None:
        return f"stops for review after about {took:g} s, until moved on with POST /_emulator/runs/<run id>/status"
    return f"stops for review after about {took:g} s, then {ending} {scenario.review_seconds:g} s later"
