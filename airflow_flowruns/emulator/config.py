"""What the emulator serves: keys, flows and how their runs progress. Loaded from JSON or defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from airflow_flowruns.emulator.faults import FaultMode

MIB = 1024 * 1024
DAY = 24 * 60 * 60.0
BUILT_IN_API_KEY = "emulator-key"
"""The emulator's fixed test key, accepted unless a configuration names its own keys: never a real one."""
Section = TypeVar("Section", bound=BaseModel)


class Scenario(BaseModel):
    """How a run progresses: processing, optionally review, then its outcome."""

    queued_seconds: float = Field(0.0, ge=0.0, le=DAY)
    processing_seconds: float = Field(1.0, ge=0.0, le=DAY)
    processing_jitter_seconds: float = Field(0.0, ge=0.0, le=DAY)
    """Each run adds a uniform random share of this to processing_seconds: runs finish at random times."""
    review: bool = False
    review_seconds: float | None = Field(None, ge=0.0, le=DAY)
    """How long a run stays in review; None: until the control API moves it on."""
    outcome: Literal["completed", "failed"] = "completed"
    error: str | None = Field(None, max_length=64 * 1024)


class EmulatorConfig(BaseModel):
    """Keys, faults and rate limit of the whole emulator, and one section per platform under its name
    (``{"tableflow": {"flows": [...]}}``), read by that platform's emulator part."""

    model_config = ConfigDict(extra="allow")

    api_keys: list[str] = Field(default_factory=lambda: [BUILT_IN_API_KEY])
    fault_mode: FaultMode = Field(default_factory=FaultMode)
    rate_limit: float | None = None
    """Requests per second per API key; beyond it the emulator answers 429 with Retry-After."""

    def platform(self, name: str, model: type[Section]) -> Section:
        """The section of one platform (its emulator part's ``model``), from the key named after the platform.

        Each platform's emulator part declares its own section, so a platform is added without touching this
        class; an absent section is that model's defaults. Parsed once, then kept.
        """
        sections = self.__pydantic_extra__ if self.__pydantic_extra__ is not None else {}
        section = sections.get(name)
        if not isinstance(section, model):
            section = sections[name] = model.model_validate(section or {})
        return section


def load_config(path: str | Path | None = None) -> EmulatorConfig:
    if path is None:
        return EmulatorConfig()
    return EmulatorConfig.model_validate(json.loads(Path(path).read_text()))
