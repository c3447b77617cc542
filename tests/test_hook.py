"""The hook over real HTTP against the emulator: parsing, retries and every error path."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pytest_mock import MockerFixture

from airflow_flowruns.exceptions import (
    FlowRunsApiError,
    FlowRunsAuthError,
    FlowRunsConfigError,
    FlowRunsResponseError,
)
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms.base import ApiCall, RunState
from airflow_flowruns.platforms.start import StartRequest, UploadFile
from support.emulator import API_KEY, Emulator, set_connection
from support.runs import RECONCILIATION_FLOW


def start(hook: FlowRunsHook, pdfs: dict[str, Path]) -> str:
    run = hook.start_run(
        StartRequest(flow_id=RECONCILIATION_FLOW, files={"purchase_order": pdfs["po"], "invoice": pdfs["inv"]})
    )
    return run.id


def test_get_run_is_normalized_and_keeps_raw(tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path]) -> None:
    hook = FlowRunsHook(tableflow_conn)
    run_id = start(hook, pdfs)
    run = hook.get_run(None, run_id)
    assert (run.platform, run.state, run.status) == ("tableflow", RunState.RUNNING, "processing")
    assert run.flow_id == RECONCILIATION_FLOW
    assert run.raw["id"] == run_id and "status_history" in run.raw
    assert run.url == f"{emulator.url}/v2/flows/runs/{run_id}"
    assert "raw" not in run.to_xcom()
    json.dumps(run.to_xcom())


def test_bad_key_is_an_auth_error_that_never_shows_the_key(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-very-secret-wrong-key-123"
    set_connection(monkeypatch, "tf_bad", "tableflow", emulator.url, password=secret)
    with pytest.raises(FlowRunsAuthError) as err:
        FlowRunsHook("tf_bad").get_run(None, "whatever")
    assert err.value.status == 401
    assert "TableFlow" in str(err.value) and "get run" in str(err.value) and "password" in str(err.value)
    assert secret not in str(err.value) and secret not in repr(err.value)
    assert len(emulator.requests()) == 1, "401 must not be retried"


def test_unknown_run_is_404_with_the_api_message(tableflow_conn: str) -> None:
    with pytest.raises(FlowRunsApiError) as err:
        FlowRunsHook(tableflow_conn).get_run(None, "doesNotExist0000")
    assert err.value.status == 404 and not err.value.retryable
    assert "doesNotExist0000" in err.value.detail


def test_422_carries_the_platforms_detail(tableflow_conn: str, pdf: Path) -> None:
    hook = FlowRunsHook(tableflow_conn)
    call = ApiCall(
        "start run",
        "POST",
        f"/flows/{RECONCILIATION_FLOW}/run",
        files=[UploadFile("invoice", pdf, "application/pdf")],
        idempotent=False,
    )
    with pytest.raises(FlowRunsApiError) as err:
        hook.client.call(call)
    assert err.value.status == 422
    assert "purchase_order" in str(err.value)


def test_429_with_retry_after_is_retried(tableflow_conn: str, emulator: Emulator, mocker: MockerFixture) -> None:
    sleeps = mocker.patch("tenacity.nap.time.sleep")
    emulator.fault(
        "/v2/flows", 429, '{"error": "Too Many Requests", "message": "slow down"}', headers={"Retry-After": "0.03"}
    )
    assert FlowRunsHook(tableflow_conn).test_connection()[0]
    assert [r["status"] for r in emulator.requests()] == [429, 200]
    assert sleeps.call_args_list[0].args == (0.03,), "the platform's Retry-After, not the backoff"


def test_500_is_retried_then_surfaces_with_status_and_message(tableflow_conn: str, emulator: Emulator) -> None:
    emulator.fault("/v2/flows/runs/", 500, '{"error": "Internal Server Error", "message": "database down"}', count=10)
    with pytest.raises(FlowRunsApiError) as err:
        FlowRunsHook(tableflow_conn).get_run(None, "abc")
    assert err.value.status == 500 and "database down" in str(err.value)
    assert len(emulator.requests()) == 3, "max_retries=2 means three attempts"


def test_start_run_is_not_retried_after_a_5xx(tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path]) -> None:
    emulator.fault(f"/v2/flows/{RECONCILIATION_FLOW}/run", 503, '{"error": "Unavailable", "message": "busy"}')
    with pytest.raises(FlowRunsApiError) as err:
        start(FlowRunsHook(tableflow_conn), pdfs)
    assert err.value.status == 503
    assert [r["method"] for r in emulator.requests()] == ["GET", "POST"], "the platform may have accepted it"


def test_start_run_is_retried_after_a_429(tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path]) -> None:
    emulator.fault(f"/v2/flows/{RECONCILIATION_FLOW}/run", 429, '{"error": "Too Many Requests", "message": "x"}')
    start(FlowRunsHook(tableflow_conn), pdfs)
    assert [r["status"] for r in emulator.requests() if r["method"] == "POST"] == [429, 200]
    assert len(emulator.runs()) == 1


def test_html_error_page_is_named(tableflow_conn: str, emulator: Emulator) -> None:
    emulator.fault(
        "/v2/flows/runs/",
        502,
        "<html><head><title>502 Bad Gateway</title></head></html>",
        content_type="text/html",
        count=10,
    )
    with pytest.raises(FlowRunsApiError) as err:
        FlowRunsHook(tableflow_conn).get_run(None, "abc")
    assert err.value.status == 502
    assert "HTML page" in str(err.value) and "502 Bad Gateway" in str(err.value)


def test_html_with_200_is_a_response_error(tableflow_conn: str, emulator: Emulator) -> None:
    emulator.fault("/v2/flows/runs/", 200, "<html><title>Sign in</title></html>", content_type="text/html", count=10)
    with pytest.raises(FlowRunsResponseError, match="HTML page titled 'Sign in'.*connection's host"):
        FlowRunsHook(tableflow_conn).get_run(None, "abc")


def test_malformed_json_is_a_response_error(tableflow_conn: str, emulator: Emulator) -> None:
    emulator.fault("/v2/flows/runs/", 200, '{"id": "abc", "status": ', count=10)
    with pytest.raises(FlowRunsResponseError, match="not valid JSON") as err:
        FlowRunsHook(tableflow_conn).get_run(None, "abc")
    assert err.value.retryable
    assert len(emulator.requests()) == 3, "a body cut short is retried like a dropped connection"


def test_json_of_the_wrong_shape_is_a_response_error(tableflow_conn: str, emulator: Emulator) -> None:
    emulator.fault("/v2/flows/runs/", 200, '{"unexpected": true}')
    with pytest.raises(FlowRunsResponseError, match="run this provider cannot read"):
        FlowRunsHook(tableflow_conn).get_run(None, "abc")


def test_unknown_status_names_the_status(tableflow_conn: str, emulator: Emulator, pdfs: dict[str, Path]) -> None:
    hook = FlowRunsHook(tableflow_conn)
    run_id = start(hook, pdfs)
    emulator.set_status(run_id, "archived_v3")
    with pytest.raises(FlowRunsResponseError, match="'archived_v3'.*known: completed, failed, processing, review"):
        hook.get_run(None, run_id)


def test_connection_refused_names_the_host_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "tf_nowhere", "tableflow", "http://127.0.0.1:9")
    with pytest.raises(FlowRunsApiError, match="no response.*ConnectError.*host"):
        FlowRunsHook("tf_nowhere").get_run(None, "abc")


def test_wrong_connection_type_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "not_a_platform", "http", "http://127.0.0.1:9")
    with pytest.raises(FlowRunsConfigError, match="type 'http'.*Use one of: .*tableflow"):
        FlowRunsHook("not_a_platform").get_run(None, "abc")


def test_missing_key_is_a_config_error(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "tf_nokey", "tableflow", emulator.url, password="")
    with pytest.raises(FlowRunsConfigError, match="no API key"):
        FlowRunsHook("tf_nokey").get_run(None, "abc")
    assert emulator.requests() == []


def test_default_base_url_and_tls_verification(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_TF_PUBLIC", json.dumps({"conn_type": "tableflow", "password": API_KEY}))
    client = FlowRunsHook("tf_public").client
    assert str(client._http.base_url) == "https://api.tableflow.com/v2/"
    assert client.options.verify is True


def test_test_connection(tableflow_conn: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    ok, message = FlowRunsHook(tableflow_conn).test_connection()
    assert ok and emulator.url in message
    set_connection(monkeypatch, "tf_wrong", "tableflow", emulator.url, password="nope")
    ok, message = FlowRunsHook("tf_wrong").test_connection()
    assert not ok and "401" in message


@pytest.mark.parametrize(
    ("faults", "status", "requests", "outcome"),
    [
        (0, 503, 1, "processing"),
        (2, 503, 3, "processing"),  # max_retries=2: the third attempt succeeds
        (3, 503, 3, "HTTP 503"),  # and a fourth is never made
        (1, 404, 1, "HTTP 404"),  # not retryable: one request only
    ],
)
def test_async_client_retries_exactly_as_configured(
    faults: int,
    status: int,
    requests: int,
    outcome: str,
    tableflow_conn: str,
    emulator: Emulator,
    pdfs: dict[str, Path],
) -> None:
    """The triggerer's client tries once before involving tenacity; attempts must still add up."""
    emulator.scenario(RECONCILIATION_FLOW, processing_seconds=600)  # still processing however slow the machine
    run_id = start(FlowRunsHook(tableflow_conn), pdfs)
    path = f"/v2/flows/runs/{run_id}"
    if faults:
        emulator.fault(path, status, '{"detail": "injected"}', method="GET", count=faults)
    emulator.clear_requests()

    async def poll() -> str:
        try:
            client = await FlowRunsHook.get_async_client(tableflow_conn)
            try:
                return (await client.get_run(None, run_id)).status
            except FlowRunsApiError as exc:
                return str(exc)
        finally:
            await FlowRunsHook.close_async_clients()

    assert outcome in asyncio.run(poll())
    assert [r["path"] for r in emulator.requests()].count(path) == requests
