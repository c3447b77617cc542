"""The registry: the one list of platforms.

Each platform is a folder of this package (``platforms/<name>/``, see ``.facts`` for what it holds) and one
``register`` call below. Hooks, connection forms, the provider info, the asset watcher, output landing and
the emulator's router are all built from what is registered here, so adding a platform changes nothing else.

Importing this module imports only the folders' facts (no Airflow, no HTTP client): Airflow reads the provider
info through it while still importing itself. A folder's other modules are imported when first used.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import TYPE_CHECKING

from airflow_flowruns.platforms import extend, noxus, stackai, tableflow
from airflow_flowruns.platforms.facts import PlatformFacts

if TYPE_CHECKING:
    from airflow_flowruns.outputs.base import OutputReader
    from airflow_flowruns.platforms.base import Platform
    from airflow_flowruns.platforms.changes import ChangeSource

_REGISTERED: dict[str, PlatformFacts] = {}


def register(facts: PlatformFacts) -> PlatformFacts:
    """Add a platform; registering the same facts again changes nothing, another platform of the same name fails."""
    known = _REGISTERED.setdefault(facts.name, facts)
    if known != facts:
        raise ValueError(f"a platform named {facts.name!r} is registered already ({known.package})")
    return facts


def registered() -> tuple[PlatformFacts, ...]:
    """Every registered platform, in the order registered."""
    return tuple(_REGISTERED.values())


def facts_of(name: str) -> PlatformFacts:
    """The facts of a registered platform; ``KeyError`` naming the registered ones for any other name."""
    try:
        return _REGISTERED[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a registered platform (registered: {', '.join(_REGISTERED)})") from None


def platform_class(conn_type: str | None, conn_id: str) -> type[Platform]:
    """The wire class of a connection's platform; the provider's own error for a type no platform has."""
    if conn_type not in _REGISTERED:
        from airflow_flowruns.exceptions import FlowRunsConfigError

        raise FlowRunsConfigError(
            f"Connection {conn_id!r} has type {conn_type!r}, which is not a flow-runs platform. "
            f"Use one of: {', '.join(sorted(_REGISTERED))}."
        )
    return PLATFORMS[conn_type]


def output_reader(name: str) -> OutputReader:
    reader: type[OutputReader] = facts_of(name).part("outputs", "READER")
    return reader()


def change_source(name: str) -> ChangeSource:
    source: ChangeSource = facts_of(name).part("changes", "CHANGES")
    return source


def emulator_parts() -> list[ModuleType]:
    """Each registered platform's part of the bundled emulator."""
    return [facts.module("emulator") for facts in registered()]


class _PlatformClasses(Mapping[str, "type[Platform]"]):
    """The registered platforms' wire classes by name, each imported when first looked up."""

    def __getitem__(self, name: str) -> type[Platform]:
        cls: type[Platform] = facts_of(name).part("api", "PLATFORM")
        return cls

    def __contains__(self, name: object) -> bool:
        return name in _REGISTERED

    def __iter__(self) -> Iterator[str]:
        return iter(list(_REGISTERED))

    def __len__(self) -> int:
        return len(_REGISTERED)


PLATFORMS: Mapping[str, type[Platform]] = _PlatformClasses()
"""Connection type to the platform's wire class, for every registered platform."""

for _facts in (tableflow.FACTS, extend.FACTS, noxus.FACTS, stackai.FACTS):
    register(_facts)

__all__ = [
    "PLATFORMS",
    "PlatformFacts",
    "change_source",
    "emulator_parts",
    "facts_of",
    "output_reader",
    "platform_class",
    "register",
    "registered",
]
