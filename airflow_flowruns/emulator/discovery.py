"""The emulator says what it serves: ``GET /_emulator/discovery`` and the banner ``flowruns-emulator`` prints.

For each registered platform: the Airflow connection that reaches the emulator, ready to paste as
``AIRFLOW_CONN_<CONN_ID>`` in both spellings Airflow reads (JSON and URI), and the flows its part of the
emulator serves (the part's ``served``), with their file fields, inputs and what their runs do.

The emulator's built-in key is a fixed test key and is shown; keys a configuration names instead are never
shown, as one of them may be a real key reused for a test.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from airflow_flowruns.emulator.config import BUILT_IN_API_KEY, EmulatorConfig
from airflow_flowruns.emulator.served import ServedField, ServedPlatform
from airflow_flowruns.platforms import emulator_parts, facts_of

KEY_PLACEHOLDER = "<one of the api_keys of the emulator's --config>"


def discovery(config: EmulatorConfig, url: str) -> dict[str, Any]:
    """What the emulator at ``url`` serves, platform by platform, and the notes a first connection needs."""
    key = BUILT_IN_API_KEY if BUILT_IN_API_KEY in config.api_keys else None
    platforms = {}
    for part in emulator_parts():
        facts = facts_of(part.PLATFORM)
        served: ServedPlatform = part.served(config)
        platforms[facts.name] = {
            "label": facts.label,
            "connection": connection(facts.name, facts.default_conn_id, url, key or KEY_PLACEHOLDER, served.extra),
            **served.model_dump(),
        }
    return {"url": url, "api_key": key, "notes": notes(url, key), "platforms": platforms}


def notes(url: str, key: str | None) -> list[str]:
    """Which key to use, and the scheme a host needs."""
    parts = urlsplit(url)
    scheme, netloc = parts.scheme, parts.netloc
    said = [
        f"API key: {key}, the emulator's fixed test key (not a secret; it works nowhere else)."
        if key
        else "API key: the emulator takes the api_keys of its --config, which are not shown: put one in the "
        "password of each connection below.",
        f"A host without a scheme means https: {netloc} alone is https://{netloc}"
        + (", so keep http:// in the host." if scheme == "http" else "."),
    ]
    if scheme == "https":
        said.append("TLS: set each connection's verify extra to the CA bundle that signed the emulator's certificate.")
    return said


def connection(conn_type: str, conn_id: str, url: str, password: str, extra: Mapping[str, str]) -> dict[str, str]:
    """The connection ``conn_id`` to the emulator, as ``AIRFLOW_CONN_<CONN_ID>`` takes it."""
    env_var = f"AIRFLOW_CONN_{conn_id.upper()}"
    value = json.dumps(
        {"conn_type": conn_type, "host": url, "password": password, **({"extra": extra} if extra else {})}
    )
    return {
        "conn_id": conn_id,
        "env_var": env_var,
        "json": value,
        "uri": airflow_uri(conn_type, url, password, extra),
        "export": f"export {env_var}={shlex.quote(value)}",
    }


def airflow_uri(conn_type: str, url: str, password: str, extra: Mapping[str, str]) -> str:
    """The connection as an Airflow URI. The URL's scheme stays before the host (``tableflow://http://...``),
    which Airflow reads back into the host; the extras are the query, or one ``__extra__`` JSON object where
    a value would not read back as the same string (Airflow parses query values that look like JSON)."""
    parts = urlsplit(url)
    uri = f"{conn_type}://{parts.scheme}://:{quote(password, safe='')}@{parts.netloc}"
    if not extra:
        return uri
    plain = not any(_reads_as_json(value) for value in extra.values())
    return f"{uri}/?{urlencode(extra) if plain else urlencode({'__extra__': json.dumps(dict(extra))})}"


def _reads_as_json(value: str) -> bool:
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


def banner(answer: dict[str, Any]) -> list[str]:
    """The discovery answer as the lines ``flowruns-emulator`` prints when it starts."""
    lines = [*answer["notes"], ""]
    for platform in answer["platforms"].values():
        extra = ", ".join(f"{name} {value}" for name, value in platform["extra"].items())
        lines.append(f"{platform['label']} flows" + (f" (connection extras: {extra}):" if extra else ":"))
        for flow in platform["flows"]:
            lines += flow_lines(flow)
        lines += [*(f"  {note}" for note in platform["notes"]), ""]
    lines += ["Connections, ready to paste (each platform's default connection id):"]
    lines += [platform["connection"]["export"] for platform in answer["platforms"].values()]
    lines += ["", f"All of this as JSON: GET {answer['url']}/_emulator/discovery"]
    return lines


def flow_lines(flow: dict[str, Any]) -> list[str]:
    """``id  name: what a run does``, then its file fields and inputs, one line each."""
    fields = [
        f"    {kind}: " + ", ".join(field_text(ServedField(**field)) for field in flow[kind])
        for kind in ("files", "inputs")
        if flow[kind]
    ]
    return [f"  {flow['id']}  {flow['name']}: {flow['outcome']}", *fields]


def field_text(field: ServedField) -> str:
    about = ", ".join(([field.about] if field.about else []) + ([] if field.required else ["optional"]))
    return f"{field.name} ({about})" if about else field.name
