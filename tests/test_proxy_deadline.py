"""A request sent through a proxy the environment names keeps its overall deadline.

The hostile server (the ``hostile`` fixture) plays the proxy and trickles its answers a byte at a time;
the platform's host does not resolve, so a request that bypassed the proxy would fail to connect instead
of reaching it. The
worker (httpx) and a trigger (aiohttp, given the proxy httpx would pick: ``tests/test_environment_proxies.py``)
both end at the connection's timeout.
"""

from __future__ import annotations

import itertools
import re
import time
import traceback

import pytest

from airflow_flowruns.exceptions import FlowRunsError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.triggers.flow_run import FlowRunTrigger
from support.emulator import set_connection
from support.hostile_server import FLOW_ID, RUN_ID, HostileServer
from test_hostile_platform import DEADLINE, KEY, assert_no_key, failure, followed

UNRESOLVABLE = "http://flowruns.invalid"
_CONNECTIONS = itertools.count()


@pytest.fixture
def conn_id(hostile: HostileServer, monkeypatch: pytest.MonkeyPatch) -> str:
    hostile.requests.clear()
    hostile.mode = "trickled body"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return set_connection(
        monkeypatch, f"proxied_{next(_CONNECTIONS)}", "tableflow", UNRESOLVABLE, password=KEY, timeout=1, max_retries=0
    )


def _through_the_proxy(hostile: HostileServer) -> None:
    assert hostile.requests, "the request never reached the proxy"
    assert hostile.requests[0]["path"].startswith(f"{UNRESOLVABLE}/"), hostile.requests[0]["path"]


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "ALL_PROXY"])
def test_worker_path(variable: str, hostile: HostileServer, conn_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, hostile.url)
    error, _ = failure(lambda: FlowRunsHook(conn_id).get_run(FLOW_ID, RUN_ID))
    assert isinstance(error, FlowRunsError), repr(error)
    assert re.search(DEADLINE.worker, str(error)), str(error)
    _through_the_proxy(hostile)
    assert_no_key("".join(traceback.format_exception(error)))


def test_trigger_path(hostile: HostileServer, conn_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", hostile.url)
    trigger = FlowRunTrigger(
        conn_id=conn_id, platform="tableflow", flow_id=FLOW_ID, run_id=RUN_ID, deadline=time.time() + 3, poll_interval=1
    )
    payload = followed(trigger)
    assert payload["outcome"] == "timeout", payload
    _through_the_proxy(hostile)
