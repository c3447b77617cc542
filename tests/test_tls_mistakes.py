"""A connection whose scheme or certificate does not fit its server fails at once, with the fix, and a 404 says
what it most likely means for the call that met it.

Plain HTTP behind an ``https://`` host (a server that answers the TLS handshake with plain HTTP bytes, or one that
waits for a request head), TLS behind an ``http://`` host, and a certificate this machine does not accept (unknown
authority, another name, expired) fail every attempt the same way. Each is met on loopback through the worker's
client, the triggerer's, and the connection's Test button: the provider's own error naming the fix, well within
the time the retries of a transient failure take, and never the key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_flowruns.client.tls import speaks_plain_http
from airflow_flowruns.emulator import EmulatorServer
from airflow_flowruns.exceptions import FlowRunsApiError, FlowRunsTlsError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms.base import ApiCall
from support.certificates import self_signed
from support.emulator import Emulator, set_connection
from support.hostile_server import Exchange, HostileServer

KEY = "tls-test-key-never-printed-7e21"
FAIL_FAST = 2.0
"""Seconds within which a mistake fails; retried as transient, it takes more than five (RETRIED)."""
RETRIED: dict[str, Any] = {"max_retries": 5, "retry_min_wait": 1.0, "retry_max_wait": 2.0, "timeout": 1.0}
"""The retries a transient failure gets: six attempts at least a second apart."""


@dataclass(frozen=True)
class Mistake:
    host: Callable[[dict[str, str]], str]
    """The connection's host, from the servers' URLs."""
    verify: str | None
    """The ``verify`` extra: the name of the certificate (in the servers' URLs) to trust, if any."""
    detail: str
    fix: str


MISTAKES = {
    "plain HTTP server that waits, https:// host": Mistake(
        lambda urls: urls["waiting"].replace("http://", "https://"),
        None,
        "answers plain HTTP, not TLS, and the host says https://",
        "The server speaks plain HTTP: use http:// only for a test server on a trusted network",
    ),
    "plain HTTP server answering the handshake, https:// host": Mistake(
        lambda urls: urls["plain"].replace("http://", "https://"),
        None,
        "answers plain HTTP, not TLS, and the host says https://",
        "The server speaks plain HTTP: use http://",
    ),
    "TLS server, http:// host": Mistake(
        lambda urls: urls["tls"].replace("https://", "http://"),
        None,
        "speaks TLS, and the host says http://",
        "The server speaks TLS: write https://",
    ),
    "certificate of an unknown authority": Mistake(
        lambda urls: urls["tls"],
        None,
        "signed by a certificate authority this machine does not trust (self-signed certificate)",
        "Set the verify extra to your CA bundle (a PEM file",
    ),
    "certificate for another name": Mistake(
        lambda urls: urls["tls"].replace("127.0.0.1", "localhost"),
        "tls",
        "certificate is for another name",
        "Use the host name the certificate was issued for",
    ),
    "expired certificate": Mistake(
        lambda urls: urls["expired"],
        "expired",
        "certificate was refused (certificate has expired)",
        "Renew the server's certificate",
    ),
}


def plain_http(ex: Exchange) -> None:
    ex.send(200, b"[]")


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("tls")
    return {"tls": self_signed(folder / "valid"), "expired": self_signed(folder / "expired", expired=True)}


@pytest.fixture(scope="module")
def servers(
    certificates: dict[str, tuple[Path, Path]], hostile: HostileServer, emulator_server: EmulatorServer
) -> Iterator[dict[str, str]]:
    """The URLs of a plain HTTP server that waits for a request head (the hostile server), of one that answers
    anything (the emulator), and of the emulator over TLS with a valid and an expired certificate."""
    hostile.answer = plain_http
    (cert, key), (old_cert, old_key) = certificates["tls"], certificates["expired"]
    with (
        EmulatorServer(ssl_certfile=str(cert), ssl_keyfile=str(key)) as tls,
        EmulatorServer(ssl_certfile=str(old_cert), ssl_keyfile=str(old_key)) as expired,
    ):
        yield {"waiting": hostile.url, "plain": emulator_server.url, "tls": tls.url, "expired": expired.url}


@pytest.fixture(params=list(MISTAKES))
def mistaken(
    request: pytest.FixtureRequest,
    servers: dict[str, str],
    certificates: dict[str, tuple[Path, Path]],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[str, Mistake]:
    """An Extend connection making one of the mistakes, with the retries a transient failure gets."""
    mistake = MISTAKES[request.param]
    verify = {"verify": str(certificates[mistake.verify][0])} if mistake.verify else {}
    set_connection(monkeypatch, "mistaken", "extend", mistake.host(servers), password=KEY, **RETRIED, **verify)
    return "mistaken", mistake


def assert_names_the_fix(error: BaseException, mistake: Mistake, elapsed: float) -> None:
    assert isinstance(error, FlowRunsTlsError) and isinstance(error, AirflowFailException)
    assert not error.retryable and error.status is None
    assert mistake.detail in str(error) and mistake.fix in str(error), str(error)
    assert KEY not in str(error)
    assert elapsed < FAIL_FAST, f"took {elapsed:.1f} s: retried as if transient"


def test_the_worker_fails_at_once_naming_the_fix(
    mistaken: tuple[str, Mistake], caplog: pytest.LogCaptureFixture
) -> None:
    conn_id, mistake = mistaken
    client = FlowRunsHook(conn_id).client
    began = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(FlowRunsTlsError) as caught:
        client.call(client.platform.test_call())
    assert_names_the_fix(caught.value, mistake, time.monotonic() - began)
    assert "retrying" not in caplog.text


def test_the_triggerer_fails_at_once_naming_the_fix(mistaken: tuple[str, Mistake]) -> None:
    conn_id, mistake = mistaken

    async def call() -> tuple[BaseException, float]:
        client = await FlowRunsHook.get_async_client(conn_id)
        began = time.monotonic()
        try:
            await client.call(client.platform.test_call())
        except FlowRunsApiError as exc:
            return exc, time.monotonic() - began
        finally:
            await FlowRunsHook.close_async_clients()
        raise AssertionError("the call succeeded")

    error, elapsed = asyncio.run(call())
    assert_names_the_fix(error, mistake, elapsed)


def test_the_test_button_names_the_fix(mistaken: tuple[str, Mistake]) -> None:
    conn_id, mistake = mistaken
    hook = FlowRunsHook(conn_id)
    began = time.monotonic()
    ok, message = hook.test_connection()
    assert time.monotonic() - began < FAIL_FAST
    assert not ok and mistake.detail in message and mistake.fix in message, message
    assert hook.client.platform.settings.base_url in message
    assert "Traceback" not in message and KEY not in message


@pytest.mark.parametrize("name", ["certificate of an unknown authority", "TLS server, http:// host"])
def test_a_start_that_met_a_mistake_is_known_not_to_have_happened(
    name: str, servers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No request reached the platform, so the operator starts again rather than looking for a run."""
    set_connection(monkeypatch, "mistaken_start", "extend", MISTAKES[name].host(servers), password=KEY, **RETRIED)
    client = FlowRunsHook("mistaken_start").client
    with pytest.raises(FlowRunsTlsError) as caught:
        client.call(ApiCall("start run", "POST", "/workflow_runs", json={}, idempotent=False))
    assert not caught.value.outcome_unknown


def test_the_authority_named_in_verify_is_trusted(
    servers: dict[str, str], certificates: dict[str, tuple[Path, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    verify = str(certificates["tls"][0])
    set_connection(monkeypatch, "trusted", "extend", servers["tls"], verify=verify)
    ok, message = FlowRunsHook("trusted").test_connection()
    assert ok, message


def test_a_host_that_is_down_is_still_retried(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused connection is no scheme mistake: retried as before, and named as a host not reached."""
    retried = {**RETRIED, "retry_min_wait": 0.01, "retry_max_wait": 0.01, "max_retries": 2}
    set_connection(monkeypatch, "down", "extend", "https://127.0.0.1:9", password=KEY, **retried)
    client = FlowRunsHook("down").client
    with caplog.at_level(logging.WARNING), pytest.raises(FlowRunsApiError) as caught:
        client.call(client.platform.test_call())
    assert not isinstance(caught.value, FlowRunsTlsError) and caught.value.retryable
    assert "ConnectError" in str(caught.value) and caplog.text.count("retrying") == 2


def test_a_tls_port_refusing_plain_http_is_not_taken_for_plain_http(hostile: HostileServer) -> None:
    """nginx and its kind answer a plain request on their TLS port with a plain 400: they speak TLS."""
    hostile.answer = lambda ex: ex.send(400, b"The plain HTTP request was sent to HTTPS port")
    try:
        assert not speaks_plain_http(httpx.URL(hostile.url))
        hostile.answer = plain_http
        assert speaks_plain_http(httpx.URL(hostile.url))
    finally:
        hostile.answer = plain_http


# --- 404: what it means depends on the call ------------------------------------------------------------------


def test_a_404_on_a_call_without_an_id_names_the_path_the_platform_expects(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Extend's calls live right after the host name: a host typed with ``/v2`` finds nothing, and no id is to
    blame."""
    set_connection(monkeypatch, "extend_v2", "extend", f"{emulator.url}/v2", password=KEY)
    ok, message = FlowRunsHook("extend_v2").test_connection()
    assert not ok and "HTTP 404" in message
    assert f"GET {emulator.url}/v2/workflow_runs found nothing, and the call names no id" in message, message
    assert "Extend answers it at https://api.extend.ai/workflow_runs" in message
    assert "right after the host name, not under /v2" in message
    assert "run id" not in message


def test_a_404_under_a_stray_version_names_the_base_path(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "tableflow_v1", "tableflow", f"{emulator.url}/v1", password=KEY)
    ok, message = FlowRunsHook("tableflow_v1").test_connection()
    assert not ok and f"GET {emulator.url}/v1/v2/flows found nothing" in message, message
    assert "TableFlow answers it at https://api.tableflow.com/v2/flows" in message
    assert "live under /v2, not under /v1/v2" in message


def test_a_404_on_a_call_with_an_id_names_the_id(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "extend_ok", "extend", emulator.url)
    with pytest.raises(FlowRunsApiError) as caught:
        FlowRunsHook("extend_ok").get_run(None, "workflow_run_nope")
    message = str(caught.value)
    assert f"GET {emulator.url}/workflow_runs/workflow_run_nope found nothing" in message, message
    assert "the run id 'workflow_run_nope' may be unknown to Extend" in message
    assert "names no id" not in message
