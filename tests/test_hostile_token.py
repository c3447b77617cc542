"""A hostile StackAI token URL: its answers are read within the connection's size limit.

The OAuth password flow reads the token answer's body; a token URL answering with a huge, endless or
compressed-to-gigabytes body (or a 401 that renews the token answered so) must meet the limit while
being read, in the worker's path and in a trigger, with an error naming the platform, call and size,
and the OAuth password appearing nowhere.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import time
import traceback

import httpx
import pytest

from airflow_flowruns.client.auth import bounded_auth
from airflow_flowruns.exceptions import FlowRunsError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.triggers.flow_run import FlowRunTrigger
from support.emulator import FAST_RETRIES
from support.hostile_server import FLOW_ID, MODES, RUN_ID, Exchange, HostileServer
from test_hostile_platform import KEY, LIMIT, MEMORY_BOUND, assert_no_key, failure, followed

TOKEN = "issued-token-77e0b3"
ORG = "org_hostile"
TOO_LARGE = "StackAI API call 'OAuth token' answered with more than 1048576 bytes"
TOKEN_MODES = {
    "huge body": TOO_LARGE + r" \(stopped after 0 decompressed bytes, 1099511627776 declared\)",
    "endless chunked body": TOO_LARGE + r" \(stopped after \d+ decompressed bytes",
    "gzip bomb": TOO_LARGE + r" \(stopped after \d+ decompressed bytes",
}


def _token(ex: Exchange) -> None:
    ex.send(200, json.dumps({"access_token": TOKEN, "expires_in": 3600}).encode())


def _huge_401(ex: Exchange) -> None:
    """A 401 whose body never ends: with a cached token, httpx reads it before renewing the token."""
    ex.sock.sendall(b"HTTP/1.1 401 X\r\nContent-Type: application/json\r\nContent-Length: 1099511627776\r\n\r\n")
    while True:
        ex.sock.sendall(b" " * 65536)


_CONNECTIONS = itertools.count()


@pytest.fixture
def conn_id(hostile: HostileServer, monkeypatch: pytest.MonkeyPatch) -> str:
    hostile.requests.clear()
    hostile.modes_by_run = {}
    conn_id = f"hostile_token_{next(_CONNECTIONS)}"  # a token cache of its own
    conn = {
        "conn_type": "stackai",
        "login": "analyst",
        "password": KEY,
        "host": hostile.url,
        "extra": {
            **FAST_RETRIES,
            "org_id": ORG,
            "token_url": "/oauth/token",
            "timeout": 5,
            "max_response_bytes": LIMIT,
            "max_retries": 0,
        },
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conn_id


@pytest.mark.parametrize("mode", TOKEN_MODES)
def test_worker_path(mode: str, hostile: HostileServer, conn_id: str, caplog: pytest.LogCaptureFixture) -> None:
    hostile.mode = mode
    caplog.set_level(logging.DEBUG)
    error, peak = failure(lambda: FlowRunsHook(conn_id).get_run(FLOW_ID, RUN_ID))
    assert isinstance(error, FlowRunsError), repr(error)
    assert re.search(TOKEN_MODES[mode], str(error)), str(error)
    assert peak < MEMORY_BOUND, f"{peak / 2**20:.1f} MiB held at the peak"
    assert [r["path"] for r in hostile.requests] == ["/oauth/token"]
    assert_no_key("".join(traceback.format_exception(error)), caplog.text)


@pytest.mark.parametrize("mode", TOKEN_MODES)
def test_trigger_path(mode: str, hostile: HostileServer, conn_id: str, caplog: pytest.LogCaptureFixture) -> None:
    hostile.mode = mode
    caplog.set_level(logging.DEBUG)
    trigger = FlowRunTrigger(
        conn_id=conn_id, platform="stackai", flow_id=FLOW_ID, run_id=RUN_ID, deadline=time.time() + 30, poll_interval=1
    )
    payload = followed(trigger)
    assert payload["outcome"] == "error", payload
    assert re.search(TOKEN_MODES[mode], payload["message"]), payload["message"]
    assert_no_key(json.dumps(payload), caplog.text)


def test_a_401_read_before_renewing_the_token_is_read_within_the_limit(
    hostile: HostileServer, conn_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With a cached token, a 401 makes the flow renew it; httpx reads that 401's body first."""
    hostile.mode = "foreign run"
    listing = f"{FLOW_ID}?page=0&page_size=100"  # the last path segment, as the server keys its answers
    hostile.modes_by_run = {"token": _token, listing: lambda ex: ex.send(200, b"[]")}
    hook = FlowRunsHook(conn_id)
    assert list(hook.list_runs(flow_id=FLOW_ID)) == []
    hostile.modes_by_run[listing] = _huge_401
    error, peak = failure(lambda: list(hook.list_runs(flow_id=FLOW_ID)))
    assert isinstance(error, FlowRunsError), repr(error)
    assert re.search(r"StackAI API call 'list runs' answered with more than 1048576 bytes", str(error)), str(error)
    assert peak < MEMORY_BOUND, f"{peak / 2**20:.1f} MiB held at the peak"
    assert_no_key("".join(traceback.format_exception(error)), caplog.text, str(error))
    assert TOKEN not in str(error)


assert set(TOKEN_MODES) <= set(MODES)


def test_the_final_answer_is_left_to_its_reader_so_a_file_download_streams_past_the_limit(
    hostile: HostileServer, conn_id: str
) -> None:
    """Only the answers the auth flow reads are bounded: a file is streamed by the downloader, whole."""
    hostile.modes_by_run = {"token": _token, "file": lambda ex: ex.send(200, bytes(2 * LIMIT))}
    auth = bounded_auth(FlowRunsHook(conn_id).platform, LIMIT)
    with httpx.Client(base_url=hostile.url, auth=auth) as http, http.stream("GET", "/file") as response:
        assert sum(len(chunk) for chunk in response.iter_raw()) == 2 * LIMIT
    assert [r["path"] for r in hostile.requests] == ["/oauth/token", "/file"]
