"""One line of ``doctor``'s report: what was checked, how it went, and the fix when it did not go well."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    OK = "OK"
    WARN = "WARN"
    """Works, and should not stay so (plain HTTP to a remote host, certificates not checked)."""
    FAIL = "FAIL"
    SKIP = "SKIP"
    """Not checked: an earlier check failed, or the connection gives it nothing to check."""


@dataclass(frozen=True)
class Check:
    name: str
    outcome: Outcome
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self, width: int) -> list[str]:
        head = f"{self.outcome.value:<4}  {self.name:<{width}}  {self.detail}"
        return [head, f"{'':<4}  {'':<{width}}  fix: {self.fix}"] if self.fix else [head]


def ok(name: str, detail: str) -> Check:
    return Check(name, Outcome.OK, detail)


def failed(name: str, detail: str, fix: str) -> Check:
    return Check(name, Outcome.FAIL, detail, fix)


def skipped(name: str, why: str) -> Check:
    return Check(name, Outcome.SKIP, why)
