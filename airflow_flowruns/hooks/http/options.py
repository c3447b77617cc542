"""The HTTP client settings of one connection, read from its extras."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from airflow_flowruns.exceptions import FlowRunsConfigError

KEEPALIVE_SECONDS = 50.0
"""How long an idle connection is kept: past the default 30 s poll interval, so a trigger's next poll
finds it open, and under the 60 s idle timeout of common load balancers, so the server never closes it
first."""


@dataclass(frozen=True)
class HttpOptions:
    """Client settings, read from the connection's extras so every task and trigger on it agrees."""

    timeout: float = 30.0
    max_retries: int = 5
    retry_min_wait: float = 1.0
    retry_max_wait: float = 60.0
    verify: bool | str = True
    max_concurrent_requests: int = 32
    max_requests_per_second: float | None = None

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any], conn_id: str) -> Self:
        values: dict[str, Any] = {}
        for name, kind in (
            ("timeout", float),
            ("max_retries", int),
            ("retry_min_wait", float),
            ("retry_max_wait", float),
            ("max_concurrent_requests", int),
            ("max_requests_per_second", float),
        ):
            if extras.get(name) is None:
                continue
            try:
                values[name] = kind(extras[name])
            except (TypeError, ValueError):
                raise FlowRunsConfigError(
                    f"Connection {conn_id!r}: extra {name!r} must be a number, not {extras[name]!r}."
                ) from None
            zero_allowed = name in ("max_retries", "retry_min_wait", "retry_max_wait")
            if values[name] < 0 or (values[name] == 0 and not zero_allowed):
                raise FlowRunsConfigError(f"Connection {conn_id!r}: extra {name!r} must be positive.")
        verify = extras.get("verify", True)
        if isinstance(verify, str) and verify.lower() in ("true", "false"):
            verify = verify.lower() == "true"
        values["verify"] = verify
        return cls(**values)

    def ssl_context(self) -> ssl.SSLContext | bool:
        """TLS verification stays on unless the connection turns it off; a string is a CA bundle path."""
        if isinstance(self.verify, str):
            return ssl.create_default_context(cafile=self.verify)
        return self.verify
