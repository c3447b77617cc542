"""A task's state store in memory, kept across tries as Airflow 3.3's is, for tests that also run on Airflow 3.1
and 3.2 (which have no ``TaskStateStoreAccessor`` to derive from). Values go through JSON, as the real store's do."""

from __future__ import annotations

import json
from typing import Any


class MemoryStateStore:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = json.loads(json.dumps(value))
