"""However a user types the connection's host, every call reaches the platform's real base URL."""

from __future__ import annotations

import json

import pytest

from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms import PLATFORMS
from airflow_flowruns.platforms.values import base_url_from
from support.emulator import API_KEY, Emulator, set_connection


@pytest.mark.parametrize(
    ("platform", "host", "expected"),
    [
        ("tableflow", "api.tableflow.com", "https://api.tableflow.com/v2"),
        ("tableflow", "https://api.tableflow.com", "https://api.tableflow.com/v2"),
        ("tableflow", "https://api.tableflow.com/", "https://api.tableflow.com/v2"),
        ("tableflow", "https://api.tableflow.com/v2", "https://api.tableflow.com/v2"),
        ("tableflow", "https://api.tableflow.com/v2/", "https://api.tableflow.com/v2"),
        ("tableflow", "http://127.0.0.1:8765", "http://127.0.0.1:8765/v2"),
        ("tableflow", "https://gateway.example/tableflow/", "https://gateway.example/tableflow/v2"),
        ("tableflow", None, "https://api.tableflow.com/v2"),
        ("extend", "api.eu1.extend.ai", "https://api.eu1.extend.ai"),
        ("extend", "https://api.eu1.extend.ai/", "https://api.eu1.extend.ai"),
        ("extend", None, "https://api.extend.ai"),
        ("noxus", "noxus.corp.example", "https://noxus.corp.example"),
        ("noxus", "http://noxus.corp.example:8080/", "http://noxus.corp.example:8080"),
        ("noxus", "", "https://backend.noxus.ai"),
        ("stackai", "api.stack-ai.com/", "https://api.stack-ai.com"),
        ("stackai", "https://api.stack-ai.com", "https://api.stack-ai.com"),
    ],
)
def test_every_host_form_reaches_the_base_url(platform: str, host: str | None, expected: str) -> None:
    assert base_url_from("c", host, None, None, PLATFORMS[platform]) == expected


def test_a_port_field_is_added_to_a_host_without_one() -> None:
    assert base_url_from("c", "noxus.corp.example", 8443, None, PLATFORMS["noxus"]) == "https://noxus.corp.example:8443"
    assert base_url_from("c", "tf.local", 8765, "http", PLATFORMS["tableflow"]) == "http://tf.local:8765/v2"


@pytest.mark.parametrize("host", ["https://me:s3cr3t-pw@api.tableflow.com", "me:s3cr3t-pw@api.tableflow.com/v2"])
def test_a_password_in_the_host_is_refused_without_showing_it(host: str) -> None:
    with pytest.raises(FlowRunsConfigError, match="user name or password in its host") as raised:
        base_url_from("tf", host, None, None, PLATFORMS["tableflow"])
    assert "s3cr3t-pw" not in str(raised.value)


def test_a_password_in_the_host_never_reaches_the_network(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    host = emulator.url.replace("://", "://me:s3cr3t-pw@")
    set_connection(monkeypatch, "tf_userinfo", "tableflow", host)
    with pytest.raises(FlowRunsConfigError) as raised:
        FlowRunsHook("tf_userinfo").get_run(None, "abc")
    assert "s3cr3t-pw" not in str(raised.value)
    assert emulator.requests() == []


@pytest.mark.parametrize("form", ["url", "url/", "bare"])
def test_a_tableflow_host_without_v2_reaches_v2(form: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The natural host, typed without the API's path (and even without a scheme), must not answer 404."""
    conn: dict[str, object] = {"conn_type": "tableflow", "password": API_KEY, "host": emulator.url}
    if form == "url/":
        conn["host"] = emulator.url + "/"
    elif form == "bare":
        conn.update(host=emulator.url.removeprefix("http://"), schema="http")
    monkeypatch.setenv("AIRFLOW_CONN_TF_BARE", json.dumps(conn))
    ok, message = FlowRunsHook("tf_bare").test_connection()
    assert ok, message
    assert f"{emulator.url}/v2" in message, "test_connection names the base URL it used"
    assert [r["path"] for r in emulator.requests()] == ["/v2/flows"]


@pytest.mark.parametrize("failure", ["bad key", "nothing listening"])
def test_a_failed_connection_test_names_the_base_url_it_tried(
    failure: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong host is when the user most needs to see where the test went; the key is never shown."""
    host = emulator.url if failure == "bad key" else "http://127.0.0.1:9"
    set_connection(monkeypatch, "tf_failing", "tableflow", host, password="not-the-key", max_retries=0)
    ok, message = FlowRunsHook("tf_failing").test_connection()
    assert not ok
    assert message.endswith(f"(base URL tried: {host}/v2)"), message
    assert "not-the-key" not in message


def test_a_connection_test_refuses_a_password_in_the_host_without_showing_it(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_connection(monkeypatch, "tf_userinfo", "tableflow", emulator.url.replace("://", "://me:s3cr3t-pw@"))
    ok, message = FlowRunsHook("tf_userinfo").test_connection()
    assert not ok and "user name or password in its host" in message, message
    assert "s3cr3t-pw" not in message and "base URL tried" not in message
    assert emulator.requests() == []
