"""What a platform's outputs reader provides: its outputs, read from the run object, without any I/O."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from airflow_flowruns.exceptions import FlowRunsResponseError
from airflow_flowruns.outputs.model import RunOutputs

M = TypeVar("M", bound=BaseModel)


class OutputReader(ABC):
    """One per platform: its folder's ``outputs.py`` names it ``READER``."""

    @abstractmethod
    def read(self, raw: Mapping[str, Any]) -> RunOutputs:
        """The outputs of one run, from the run object exactly as the platform's read of it returned it."""


def parse_part(model: type[M], body: Any, what: str) -> M:
    try:
        return model.model_validate(body)
    except ValueError as exc:
        raise FlowRunsResponseError(
            f"The {what} has a shape this provider cannot read for its outputs ({type(exc).__name__}); "
            "the run itself is kept in run.json. Upgrade airflow-flowruns or report the platform's change."
        ) from None


def latest(times: Iterable[datetime | None]) -> str | None:
    """The latest of some times, as ISO 8601; None when none is known."""
    known = [time for time in times if time is not None]
    return max(known).isoformat() if known else None


def output_kind(value: Any) -> str:
    """``text`` for a string, ``data`` for any other JSON value."""
    return "text" if isinstance(value, str) else "data"
