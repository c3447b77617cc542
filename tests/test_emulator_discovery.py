"""The emulator says what it serves: its discovery call, the connections it hands out, and the banner
``flowruns-emulator`` prints when it starts."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_flowruns.emulator import EmulatorConfig, EmulatorServer
from airflow_flowruns.emulator.config import BUILT_IN_API_KEY
from airflow_flowruns.emulator.discovery import KEY_PLACEHOLDER, banner, discovery
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms import registered
from airflow_flowruns.platforms.stackai.emulator import STACKAI_FLOW, STACKAI_ORG
from airflow_flowruns.platforms.start import StartRequest
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_RECONCILIATION_FLOW
from support.emulator import Emulator

PLATFORMS = [facts.name for facts in registered()]
EMULATOR = str(Path(sys.executable).parent / "flowruns-emulator")


def answer(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/_emulator/discovery", timeout=10).raise_for_status().json()


def test_discovery_names_every_registered_platform_its_connection_and_flows(emulator: Emulator) -> None:
    found = answer(emulator.url)
    assert (found["url"], found["api_key"]) == (emulator.url, BUILT_IN_API_KEY)
    assert "fixed test key" in found["notes"][0]
    host = emulator.url.removeprefix("http://")
    assert f"A host without a scheme means https: {host} alone is https://{host}" in found["notes"][1]
    assert list(found["platforms"]) == PLATFORMS
    for facts in registered():
        platform = found["platforms"][facts.name]
        served = [flow_id for flow_id, _ in facts.module("emulator").scenarios(EmulatorConfig())]
        assert platform["label"] == facts.label
        assert platform["connection"]["conn_id"] == facts.default_conn_id
        assert platform["connection"]["env_var"] == f"AIRFLOW_CONN_{facts.default_conn_id.upper()}"
        assert [flow["id"] for flow in platform["flows"]] == served
        assert all(flow["outcome"] for flow in platform["flows"])
    flows = {name: {f["id"]: f for f in p["flows"]} for name, p in found["platforms"].items()}
    reconciliation = flows["tableflow"][TABLEFLOW_RECONCILIATION_FLOW]
    assert [(f["name"], f["required"]) for f in reconciliation["files"]] == [
        ("purchase_order", True),
        ("invoice", True),
        ("attachments", False),
    ]
    assert found["platforms"]["stackai"]["extra"] == {"org_id": STACKAI_ORG, "flow_id": STACKAI_FLOW}
    assert [f["name"] for f in flows["stackai"][STACKAI_FLOW]["files"]] == ["doc-0"]
    assert "fails (" in flows["extend"]["workflow_failing"]["outcome"]


@contextmanager
def pasted_hook(monkeypatch: pytest.MonkeyPatch, connection: dict[str, str], spelling: str) -> Iterator[FlowRunsHook]:
    """A hook on the connection as a user pastes it: the ``export`` line through a shell's parsing, or the URI."""
    if spelling == "export":
        export, assignment = shlex.split(connection["export"])
        name, value = assignment.split("=", 1)
        assert (export, name) == ("export", connection["env_var"])
    else:
        name, value = connection["env_var"], connection["uri"]
    monkeypatch.setenv(name, value)
    hook = FlowRunsHook(connection["conn_id"])
    try:
        yield hook
    finally:
        hook.client.close()


@pytest.mark.parametrize("spelling", ["export", "uri"])
@pytest.mark.parametrize("name", PLATFORMS)
def test_a_pasted_connection_tests_and_starts_a_run_with_the_fields_discovery_names(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, pdf: Path, name: str, spelling: str
) -> None:
    platform = answer(emulator.url)["platforms"][name]
    flow = next(f for f in platform["flows"] if f["outcome"].startswith("completes"))
    request = StartRequest(
        flow_id=flow["id"],
        files={field["name"]: pdf for field in flow["files"]},
        inputs={field["name"]: "Summarize it" for field in flow["inputs"]},
        task_key="af-discovery",
    )
    with pasted_hook(monkeypatch, platform["connection"], spelling) as hook:
        assert hook.test_connection() == (
            True,
            f"Connected to {platform['label']} at {emulator.url}{hook.platform.base_path}.",
        )
        run = hook.start_run(request)
    (made,) = emulator.runs()
    assert (made["id"], made["platform"], made["flow_id"]) == (run.id, name, flow["id"])


def test_a_uri_keeps_extras_that_look_like_json_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """An organization id of digits would read back from a plain query as a number: it goes as ``__extra__``."""
    config = EmulatorConfig.model_validate({"stackai": {"org_id": "12345"}})
    with EmulatorServer(config) as server:
        platform = answer(server.url)["platforms"]["stackai"]
        assert "__extra__" in platform["connection"]["uri"]
        with pasted_hook(monkeypatch, platform["connection"], "uri") as hook:
            assert hook.platform.settings.extras == {"org_id": "12345", "flow_id": STACKAI_FLOW}
            assert hook.test_connection()[0]


def test_a_configured_key_is_never_shown() -> None:
    """Keys a configuration names may be real ones reused for a test: neither the call nor the banner has them."""
    secret = "sk-live-configured-0123456789"
    said = discovery(EmulatorConfig(api_keys=[secret]), "http://127.0.0.1:8765")
    text = json.dumps(said) + "\n".join(banner(said))
    assert secret not in text
    assert said["api_key"] is None
    assert json.loads(said["platforms"]["tableflow"]["connection"]["json"])["password"] == KEY_PLACEHOLDER


@pytest.fixture
def emulator_process() -> Iterator[subprocess.Popen[str]]:
    """``flowruns-emulator`` as a user starts it, killed after 60 s whatever happens, so a read never hangs."""
    process = subprocess.Popen([EMULATOR, "--port", "0"], stdout=subprocess.PIPE, text=True)
    timer = threading.Timer(60, process.kill)
    timer.start()
    try:
        yield process
    finally:
        timer.cancel()
        process.terminate()
        process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()


@pytest.mark.integration
def test_the_banner_lists_each_platforms_flows_and_connections_to_paste(
    emulator_process: subprocess.Popen[str],
) -> None:
    assert emulator_process.stdout is not None
    lines: list[str] = []
    while not lines or not lines[-1].startswith("All of this as JSON"):
        line = emulator_process.stdout.readline()
        assert line, "the emulator's output ended before its banner did:\n" + "\n".join(lines)
        lines.append(line.rstrip("\n"))
    first = lines[0]
    assert first.startswith("flowruns-emulator listening on http://127.0.0.1:"), first
    url = first.rsplit(" ", 1)[-1]
    found = answer(url)
    assert (
        lines[1] == f"API key: {BUILT_IN_API_KEY}, the emulator's fixed test key (not a secret; it works nowhere else)."
    )
    for platform in found["platforms"].values():
        assert any(line.startswith(f"{platform['label']} flows") for line in lines)
        for flow in platform["flows"]:
            assert any(line.startswith(f"  {flow['id']}  {flow['name']}: ") for line in lines), flow["id"]
    exports = [line for line in lines if line.startswith("export AIRFLOW_CONN_")]
    assert exports == [platform["connection"]["export"] for platform in found["platforms"].values()]
    assert all(json.loads(shlex.split(line)[1].split("=", 1)[1])["host"] == url for line in exports)
    assert lines[-1] == f"All of this as JSON: GET {url}/_emulator/discovery"
