"""What a platform is, as the registry lists it: its facts, and where the rest of its folder lives.

A platform's folder (``platforms/<name>/``) holds everything that is that platform. Its ``__init__.py`` holds
a ``PlatformFacts`` and imports nothing but this module and the connection forms, so the registry, the
provider info and the connection forms read every platform without importing Airflow or any HTTP client. The
folder's other modules are found by name and imported when first needed:

* ``api.py``: the I/O-free wire module, ``PLATFORM`` (a ``Platform``);
* ``outputs.py``: ``READER``, the run's outputs read from the run object (an ``OutputReader``);
* ``changes.py``: ``CHANGES``, how the asset watcher finds the runs that changed (a ``ChangeSource``);
* ``emulator.py``: the platform's part of the bundled emulator (``PATH_PREFIXES``, ``router``, ``scenarios``,
  ``error_body``, and ``served``: its flows as the emulator's discovery call and start-up banner list them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import import_module
from types import ModuleType
from typing import Any

from airflow_flowruns.connection_forms import API_KEY_HOST, ConnectionForm, ExtraField, platform_form


@dataclass(frozen=True)
class PlatformFacts:
    """One platform's facts table."""

    name: str
    """Connection type and the ``platform`` value in XCom, e.g. ``tableflow``."""
    label: str
    """Human name used in messages, e.g. ``TableFlow``."""
    default_base_url: str
    """The API's base URL, used when the connection names no host."""
    integration_url: str
    """The vendor's site, for the provider info's integration entry."""
    package: str
    """The folder's package, where ``api``, ``outputs``, ``changes`` and ``emulator`` are found."""
    base_path: str = ""
    """The path every call of the API lives under (TableFlow: ``/v2``), added to a host typed without it."""
    extras: tuple[ExtraField, ...] = ()
    """The platform's own connection extras, shown in its form before the client settings every platform has."""
    reports_confidence: bool = False
    """Whether the run's outputs carry a confidence per field, which ``review_below_confidence`` needs."""
    relabeling: Mapping[str, str] = field(default_factory=lambda: dict(API_KEY_HOST))
    """The standard connection fields the form shows, with their labels; the others are hidden."""

    @property
    def form(self) -> ConnectionForm:
        """What the platform's connection form in the Airflow UI shows."""
        return platform_form(self.label, self.default_base_url, self.relabeling, self.extras)

    @property
    def default_conn_id(self) -> str:
        return f"{self.name}_default"

    @property
    def hook_class_name(self) -> str:
        """The dotted path of the hook class that registers this connection type (made by ``hooks.flow_run``)."""
        return f"airflow_flowruns.hooks.flow_run.{self.label}Hook"

    def part(self, module: str, name: str) -> Any:
        """``name`` from the folder's module ``module``, imported on first use."""
        return getattr(self.module(module), name)

    def module(self, module: str) -> ModuleType:
        return import_module(f"{self.package}.{module}")
