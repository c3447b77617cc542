"""The environment's proxy settings and ``~/.netrc``, as the triggerer's client reads them.

The triggerer chooses a connection's proxy once, by httpx's rules (``NO_PROXY`` included), and never reads
``~/.netrc``: a login there for the platform's host would otherwise be added beside the platform's key (and
aiohttp refuses a request carrying both).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from airflow_flowruns.client.proxies import environment_proxy
from airflow_flowruns.platforms.extend.emulator import EXTEND_INVOICE_WORKFLOW
from airflow_flowruns.triggers.flow_run import FlowRunTrigger
from support.emulator import Emulator, set_connection
from test_hostile_platform import followed

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
NOWHERE = "http://127.0.0.1:9"
"""A proxy nothing listens on: a request sent through it fails to connect."""


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def finished_run(emulator: Emulator) -> str:
    body = {"platform": "extend", "flow_id": EXTEND_INVOICE_WORKFLOW, "count": 1, "scenario": {"queued_seconds": 0}}
    run_id: str = emulator.control.post("/seed", json=body).json()["ids"][0]
    return run_id


def follow(conn_id: str, run_id: str) -> str:
    trigger = FlowRunTrigger(
        conn_id=conn_id,
        platform="extend",
        flow_id=EXTEND_INVOICE_WORKFLOW,
        run_id=run_id,
        deadline=time.time() + 20,
        poll_interval=1,
    )
    outcome: str = followed(trigger)["outcome"]
    return outcome


@pytest.mark.parametrize(
    ("variables", "proxy"),
    [
        ({}, None),
        ({"HTTP_PROXY": NOWHERE}, NOWHERE),
        ({"ALL_PROXY": NOWHERE}, NOWHERE),
        ({"HTTPS_PROXY": NOWHERE}, None),
        ({"HTTP_PROXY": NOWHERE, "NO_PROXY": "127.0.0.1"}, None),
        ({"ALL_PROXY": NOWHERE, "NO_PROXY": "api.extend.ai"}, NOWHERE),
    ],
)
def test_the_proxy_is_the_one_httpx_would_pick(
    variables: dict[str, str], proxy: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    chosen = environment_proxy(httpx.URL("http://127.0.0.1:8765/v1/"))
    assert (None if chosen is None else str(chosen.url).rstrip("/")) == proxy


def test_no_proxy_lets_a_trigger_reach_the_platform_directly(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", NOWHERE)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    conn_id = set_connection(monkeypatch, "extend_no_proxy", "extend", emulator.url, max_retries=0)
    assert follow(conn_id, finished_run(emulator)) == "settled"


def test_a_netrc_login_for_the_host_is_not_sent(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password netrc-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    conn_id = set_connection(monkeypatch, "extend_netrc", "extend", emulator.url, max_retries=0)
    assert follow(conn_id, finished_run(emulator)) == "settled"
