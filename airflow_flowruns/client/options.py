"""The HTTP client settings of one connection, read from its extras."""

from __future__ import annotations

import logging
import math
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from airflow_flowruns.exceptions import FlowRunsConfigError

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 50.0
"""How long an idle connection is kept: past the default 30 s poll interval, so a trigger's next poll
finds it open, and under the 60 s idle timeout of common load balancers, so the server never closes it
first."""
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
"""The largest answer read (decompressed): a page of runs is at most a few megabytes on every platform."""
DEFAULT_MAX_OUTPUT_FILE_BYTES = 1024**3
"""The largest output file landed (decompressed): far past any document a flow returns, yet a broken or
hostile host cannot fill the disk with one endless file."""
DEFAULT_MAX_LANDING_BYTES = 10 * 1024**3
"""The most bytes of output files one run's landing writes, all its files together."""

_NUMBERS: tuple[tuple[str, type[int] | type[float], bool], ...] = (
    # extra, type, whether 0 is allowed
    ("timeout", float, False),
    ("max_retries", int, True),
    ("retry_min_wait", float, True),
    ("retry_max_wait", float, True),
    ("max_concurrent_requests", int, False),
    ("max_requests_per_second", float, False),
    ("max_response_bytes", int, False),
    ("max_output_file_bytes", int, False),
    ("max_landing_bytes", int, False),
)
_warned_unverified: set[str] = set()
_warned_lock = threading.Lock()


@dataclass(frozen=True)
class HttpOptions:
    """Client settings, read from the connection's extras so every task and trigger on it agrees."""

    timeout: float = 30.0
    """Seconds for a whole request: connecting, sending and reading the complete answer."""
    max_retries: int = 5
    retry_min_wait: float = 1.0
    retry_max_wait: float = 60.0
    """The longest wait between attempts and after a 429, whatever ``Retry-After`` asks."""
    verify: bool | str = True
    max_concurrent_requests: int = 32
    max_requests_per_second: float | None = None
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    max_output_file_bytes: int = DEFAULT_MAX_OUTPUT_FILE_BYTES
    max_landing_bytes: int = DEFAULT_MAX_LANDING_BYTES
    allow_private_presigned_urls: bool = False
    """Whether a presigned download may go to a private, loopback or link-local address (storage on the
    company network); off, an answer cannot point a worker at its own network or a cloud metadata service."""

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any], conn_id: str) -> Self:
        values: dict[str, Any] = {}
        for name, kind, zero_allowed in _NUMBERS:
            if extras.get(name) is None:
                continue
            try:
                values[name] = kind(extras[name])
            except (TypeError, ValueError, OverflowError):
                raise FlowRunsConfigError(
                    f"Connection {conn_id!r}: extra {name!r} must be a number, not {extras[name]!r}."
                ) from None
            if not math.isfinite(values[name]) or values[name] < 0 or (values[name] == 0 and not zero_allowed):
                raise FlowRunsConfigError(f"Connection {conn_id!r}: extra {name!r} must be a positive finite number.")
        values["verify"] = _verify(extras.get("verify", True), conn_id)
        values["allow_private_presigned_urls"] = _flag(extras, "allow_private_presigned_urls", conn_id)
        return cls(**values)

    def ssl_context(self) -> ssl.SSLContext | bool:
        """TLS verification stays on unless the connection turns it off; a string is a CA bundle path."""
        if isinstance(self.verify, str):
            return ssl.create_default_context(cafile=self.verify)
        return self.verify


def _flag(extras: Mapping[str, Any], name: str, conn_id: str) -> bool:
    """A true/false extra, off when absent; JSON's true and false or their spelling as text."""
    value = extras.get(name)
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise FlowRunsConfigError(f"Connection {conn_id!r}: extra {name!r} must be true or false, not {value!r}.")


def _verify(value: Any, conn_id: str) -> bool | str:
    """The ``verify`` extra: true, false, or the path of a readable CA bundle; checked here so a bad one
    names the extra and the connection instead of failing inside the TLS library."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        value = value.strip().lower() == "true"
    if isinstance(value, bool):
        if not value:
            with _warned_lock:
                first = conn_id not in _warned_unverified
                _warned_unverified.add(conn_id)
            if first:
                log.warning(
                    "Connection %r has verify=false: TLS certificates are not checked, so anyone on the network "
                    "path can read the API key. Use a CA bundle path instead.",
                    conn_id,
                )
        return value
    if not isinstance(value, str) or not value.strip():
        raise FlowRunsConfigError(
            f"Connection {conn_id!r}: extra 'verify' must be true, false or the path of a CA bundle, not {value!r}."
        )
    try:
        ssl.create_default_context(cafile=value)
    except (OSError, ssl.SSLError) as exc:
        raise FlowRunsConfigError(
            f"Connection {conn_id!r}: extra 'verify' names CA bundle {value!r}, which cannot be loaded ({exc}). "
            "Give the path of a PEM file readable on every worker and triggerer."
        ) from None
    return value
