"""What a run consumed, in one shape for every platform: a run's ``usage``, and the totals over many runs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict


class Usage(BaseModel):
    """What one run consumed, as its platform reports it.

    Each platform's ``parse_run`` fills the measures its answers carry (``reported``) and leaves the others
    None; XCom, ``outputs.json``, the batch manifest and the lineage facet read only this shape, so a platform
    that reports usage adds its parser and nothing else.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    credits: float | None = None
    """Billing credits (Extend's ``usage.credits``)."""
    pages: int | None = None
    """Pages of the documents the run processed (Extend's ``files[].metadata.pageCount``)."""
    tokens: int | None = None
    """Model tokens the run used (StackAI's ``total_tokens``)."""

    @classmethod
    def reported(cls, **measures: float | None) -> Usage | None:
        """The usage of a run whose platform reports ``measures``; None where it reports none of them."""
        usage = cls.model_validate(measures)
        return usage if usage.model_dump(exclude_none=True) else None

    @classmethod
    def total(cls, usages: Iterable[Usage | None]) -> Usage | None:
        """Each measure summed over the runs that report it; None where no run reports any. Credits are
        rounded to a millionth, so a sum of fractional credits reads as the platforms' own figures do."""
        sums: dict[str, float] = {}
        for usage in usages:
            for name, value in (usage.model_dump(exclude_none=True) if usage else {}).items():
                sums[name] = sums.get(name, 0) + value
        if "credits" in sums:
            sums["credits"] = round(sums["credits"], 6)
        return cls.reported(**sums)

    def to_json(self) -> dict[str, Any]:
        """Every measure by name, None where the platform reports it not."""
        return self.model_dump(mode="json")
