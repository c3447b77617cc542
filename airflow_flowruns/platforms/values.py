"""Values checked before they go on the wire: the base URL a host names, path segments, JSON metadata, text.

Each check turns what a user typed (or a template rendered) into the provider's own error naming the value
and the fix, before any call is made; the platform modules and the operators share them.
"""

from __future__ import annotations

import ipaddress
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow_flowruns.exceptions import FlowRunsConfigError

if TYPE_CHECKING:
    from airflow_flowruns.platforms.base import Platform


def base_url_from(
    conn_id: str, host: str | None, port: int | None, schema: str | None, platform: type[Platform]
) -> str:
    """The API base URL from a connection's host, however the user typed it.

    A bare host name (``api.tableflow.com``), a URL with or without scheme, with or without the API's base
    path (``platform.base_path``, e.g. ``/v2``) and with or without a trailing slash all reach the same
    base URL. A host carrying ``user:password@`` is refused: the key belongs in the password field, and a
    password in the host would end up in every URL the client logs.
    """
    if not host or not host.strip():
        return platform.default_base_url
    host = host.strip()
    if "://" not in host:
        host = f"{schema or 'https'}://{host}"
    parts = urlsplit(host)
    if "@" in parts.netloc:
        raise FlowRunsConfigError(
            f"Connection {conn_id!r} has a user name or password in its host (user:password@host). Put the "
            f"{platform.label} API key in the connection's password field and only the host name in host."
        )
    if not parts.hostname:
        raise FlowRunsConfigError(
            f"Connection {conn_id!r} has a host without a host name; use e.g. {platform.default_base_url}."
        )
    netloc = parts.netloc if parts.port or not port else f"{parts.netloc}:{port}"
    path = parts.path.rstrip("/")
    if platform.base_path and not path.endswith(platform.base_path):
        path += platform.base_path
    return f"{parts.scheme}://{netloc}{path}"


def require_json_object(value: Any, what: str) -> dict[str, Any]:
    """Check up front that metadata can be sent as a JSON object, before any file is uploaded."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
        except ValueError as exc:
            raise FlowRunsConfigError(
                f"{what} is a string that is not valid JSON ({exc}); pass a dict or a JSON object string."
            ) from None
    if not isinstance(value, Mapping):
        raise FlowRunsConfigError(f"{what} must be a JSON object (a dict), not {type(value).__name__}.")
    try:
        json.dumps(value, allow_nan=False)
        _check_keys(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise FlowRunsConfigError(
            f"{what} cannot be sent as JSON ({exc}); use only strings, finite numbers, booleans, lists and dicts."
        ) from None
    return dict(value)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"key {repeated[0]!r} appears more than once")
    return dict(pairs)


def _check_keys(value: Any) -> None:
    """Refuse keys JSON would merge: ``{1: "a", "1": "b"}`` both become ``"1"``, and one value would be lost."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            as_json = [json.dumps({key: None})[1:-7] for key in item]
            clash = next((name for name in as_json if as_json.count(name) > 1), None)
            if clash is not None:
                raise ValueError(f"two keys both become {clash} in JSON")
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def path_segment(value: str, what: str = "id") -> str:
    """An id as exactly one URL path segment, percent-encoded: ``/``, ``?``, ``#`` and ``%`` in a templated
    id can never aim a request (and the connection's key) at another path of the API host.

    Every platform module builds its paths with this; ``""``, ``.`` and ``..`` name no resource and are refused.
    """
    if value in ("", ".", ".."):
        raise FlowRunsConfigError(
            f"{what} {value!r} cannot name a run or flow; if it is templated, check what the template renders."
        )
    return quote(value, safe="")


def require_text(value: Any, what: str) -> str:
    """A required id or name, refusing one that a template rendered empty."""
    text = str(value).strip() if value is not None else ""
    if not text:
        raise FlowRunsConfigError(f"{what} is empty; if it is templated, check that the template renders a value.")
    return text


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine as written (``localhost`` or a loopback address, in any case and
    with or without the root's trailing dot), without asking a resolver, which could answer otherwise."""
    name = host.rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def repeated(values: Iterable[str]) -> list[str]:
    """The values that appear more than once, sorted: keys that must name one thing each."""
    return sorted(value for value, count in Counter(values).items() if count > 1)
