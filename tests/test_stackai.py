"""StackAI over real HTTP against the emulator: synchronous runs, outputs, the sensor by listing, OAuth."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import Context
from airflow.sdk.log import redact

from airflow_flowruns.exceptions import FlowRunFailedError, FlowRunsApiError, FlowRunsConfigError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.operators.flow_run import FlowRunOperator, task_key
from airflow_flowruns.platforms.stackai import api as stackai
from airflow_flowruns.platforms.stackai.emulator import (
    STACKAI_BIG_OUTPUT_FLOW,
    STACKAI_FAILING_FLOW,
    STACKAI_FLOW,
    STACKAI_ORG,
)
from airflow_flowruns.platforms.start import StartRequest
from airflow_flowruns.sensors.flow_run import FlowRunSensor
from airflow_flowruns.triggers.flow_run import FlowRunTrigger
from support.emulator import API_KEY, FAST_RETRIES, Emulator, set_connection
from support.runs import run_trigger

RUNS_PATH = f"/analytics/org/{STACKAI_ORG}/flows/{STACKAI_FLOW}"
RUN_PATH = f"/inference/v0/run/{STACKAI_ORG}/{STACKAI_FLOW}"


@pytest.fixture
def stackai_conn(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> str:
    return set_connection(
        monkeypatch, "stackai_test", "stackai", emulator.url, org_id=STACKAI_ORG, flow_id=STACKAI_FLOW
    )


def task(conn_id: str, pdf: Path, flow: str = STACKAI_FLOW, **kwargs: Any) -> FlowRunOperator:
    args = {"flow_id": flow, "files": {"doc-0": pdf}, "inputs": {"in-0": "Check the renewal clause"}, **kwargs}
    return FlowRunOperator(task_id="t", flowruns_conn_id=conn_id, **args)


def oauth_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, url: str, password: str, **extra: Any) -> str:
    conn = {
        "conn_type": "stackai",
        "login": "analyst",
        "password": password,
        "host": url,
        "extra": {**FAST_RETRIES, "org_id": STACKAI_ORG, "token_url": "/oauth/token", "flow_id": STACKAI_FLOW, **extra},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conn_id


def test_synchronous_run_with_files_and_small_outputs_runs_in_the_worker_when_deferrable(
    stackai_conn: str, emulator: Emulator, pdf: Path, context: Context, capsys: pytest.CaptureFixture[str]
) -> None:
    result = task(stackai_conn, pdf, deferrable=True).execute(context)  # a defer() would raise TaskDeferred
    (run,) = emulator.runs()
    assert (result["id"], result["state"], result["status"], result["platform"]) == (
        run["id"],
        "succeeded",
        "COMPLETED",
        "stackai",
    )
    assert run["user_id"] == task_key(context)
    assert run["documents"] == [{"field": "doc-0", "filename": "doc.pdf", "size": pdf.stat().st_size}]
    assert run["inputs"] == {"in-0": "Check the renewal clause"}
    assert result["outputs"]["out-0"].startswith("Reviewed 1 document(s)")
    assert result["usage"] == {"credits": None, "pages": None, "tokens": 42}, "the listing's total_tokens"
    assert "StackAI has no asynchronous runs: the run ran in the worker" in capsys.readouterr().out
    assert [r["path"] for r in emulator.requests()][:2] == [
        f"/documents/{STACKAI_ORG}/{STACKAI_FLOW}/doc-0/{task_key(context)}",
        RUN_PATH,
    ]


def test_large_outputs_go_to_output_path(
    stackai_conn: str, emulator: Emulator, pdf: Path, context: Context, tmp_path: Path
) -> None:
    target = tmp_path / "outputs" / "report.json"
    result = task(stackai_conn, pdf, STACKAI_BIG_OUTPUT_FLOW, output_path=f"file://{target}").execute(context)
    assert "outputs" not in result and result["output_path"] == f"file://{target}"
    assert len(json.loads(target.read_text())["out-0"]) > 200_000
    assert len(json.dumps(result)) < 2000


def test_large_outputs_without_output_path_fail_clearly_and_a_retry_reattaches(
    stackai_conn: str, emulator: Emulator, pdf: Path, context: Context, tmp_path: Path
) -> None:
    with pytest.raises(FlowRunsConfigError, match="over max_xcom_output_bytes=65536, and no output_path"):
        task(stackai_conn, pdf, STACKAI_BIG_OUTPUT_FLOW).execute(context)
    context["ti"].try_number = 2
    target = tmp_path / "o.json"
    result = task(stackai_conn, pdf, STACKAI_BIG_OUTPUT_FLOW, output_path=f"file://{target}").execute(context)
    assert len(emulator.runs()) == 1 and result["id"] == emulator.runs()[0]["id"]
    assert json.loads(target.read_text())["out-0"].startswith("Reviewed 1 document(s)")


def test_failed_run_fails_the_task_with_its_error(
    stackai_conn: str, emulator: Emulator, pdf: Path, context: Context
) -> None:
    with pytest.raises(FlowRunFailedError, match="LLM node out-0 timed out"):
        task(stackai_conn, pdf, STACKAI_FAILING_FLOW).execute(context)
    assert len(emulator.runs()) == 1, "the 5xx was reconciled through the listing, not repeated"


def test_a_run_call_outlasting_run_timeout_is_followed_through_the_listing_not_repeated(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, pdf: Path, context: Context
) -> None:
    emulator.scenario(STACKAI_FLOW, platform="stackai", processing_seconds=1.5)
    conn = set_connection(monkeypatch, "stackai_slow", "stackai", emulator.url, org_id=STACKAI_ORG, run_timeout=0.2)
    result = task(conn, pdf, poll_interval=0.1).execute(context)
    (run,) = emulator.runs()
    assert (result["id"], result["state"]) == (run["id"], "succeeded")
    for _ in range(100):  # the emulator logs the abandoned run call once its handler is done
        if RUN_PATH in [r["path"] for r in emulator.requests()]:
            break
        time.sleep(0.05)
    paths = [r["path"] for r in emulator.requests()]
    assert paths.count(RUN_PATH) == 1 and paths.count(RUNS_PATH) >= 2


def test_a_run_not_yet_in_the_listing_is_taken_from_the_run_answer(
    stackai_conn: str, emulator: Emulator, pdf: Path, context: Context
) -> None:
    emulator.fault(RUNS_PATH, 200, "[]", method="GET", count=2)  # also hides it from a lookup after an error
    result = task(stackai_conn, pdf).execute(context)
    (run,) = emulator.runs()
    assert (result["id"], result["state"], result["status"]) == (run["id"], "succeeded", "COMPLETED")
    assert result["outputs"]["out-0"].startswith("Reviewed 1 document(s)")
    assert [r["path"] for r in emulator.requests()].count(RUNS_PATH) == 1


def seed(emulator: Emulator, count: int, **body: Any) -> list[str]:
    spec = {
        "platform": "stackai",
        "flow_id": STACKAI_FLOW,
        "count": count,
        "created_from": 1.7e9,
        "created_to": 1.7e9 + 86400,
        "scenario": {"processing_seconds": 60},
        **body,
    }
    return emulator.control.post("/seed", json=spec).json()["ids"]


@pytest.mark.parametrize(
    ("raw", "on_review", "outcome"),
    [
        ("COMPLETED", "succeed", "succeeded"),
        ("FAILED", "succeed", "error"),
        ("CANCELLED", "succeed", "error"),
        ("PAUSED", "succeed", "needs_review"),
        ("PAUSED", "fail", "error"),
        ("PAUSED", "wait", None),
        ("RESUMED", "succeed", None),
    ],
)
def test_sensor_follows_a_run_through_the_listing(
    stackai_conn: str, emulator: Emulator, raw: str, on_review: str, outcome: str | None
) -> None:
    ids = seed(emulator, 30)
    emulator.set_status(ids[3], raw, error="Rate limited by the model provider")
    sensor = FlowRunSensor(
        task_id="s",
        flowruns_conn_id=stackai_conn,
        run_id=ids[3],
        flow_id=STACKAI_FLOW,
        on_review=on_review,
        poke_interval=1,
    )
    if outcome == "error":
        with pytest.raises(FlowRunFailedError, match=raw):
            sensor.poke({})
    elif outcome is None:
        assert sensor.poke({}).is_done is False
    else:
        done = sensor.poke({})
        assert done.xcom_value is not None and done.xcom_value["state"] == outcome


def follow_in_triggerer(conn_id: str, run_id: str) -> dict[str, Any]:
    trigger = FlowRunTrigger(
        conn_id=conn_id,
        platform="stackai",
        flow_id=STACKAI_FLOW,
        run_id=run_id,
        deadline=time.time() + 30,
        poll_interval=0.05,
    )
    return run_trigger(trigger)


@pytest.mark.parametrize(("raw", "state"), [("COMPLETED", "succeeded"), ("PAUSED", "needs_review")])
def test_deferred_wait_finds_the_run_through_the_listing_from_the_triggerer(
    stackai_conn: str, emulator: Emulator, raw: str, state: str
) -> None:
    ids = seed(emulator, 150)
    emulator.set_status(ids[0], raw)  # the oldest: on the second page
    event = follow_in_triggerer(stackai_conn, ids[0])
    assert (event["outcome"], event["run"]["id"], event["run"]["state"]) == ("settled", ids[0], state)
    assert [r["path"] for r in emulator.requests()] == [RUNS_PATH, RUNS_PATH]


def test_the_triggerer_follows_a_run_through_the_oauth_flow(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An auth flow takes the AsyncClient's own path in the triggerer, not the direct one of header keys."""
    conn = oauth_connection(monkeypatch, "stackai_oauth_trigger", emulator.url, "analyst-password")
    ids = seed(emulator, 2)
    emulator.set_status(ids[0], "COMPLETED")
    event = follow_in_triggerer(conn, ids[0])
    assert (event["outcome"], event["run"]["state"]) == ("settled", "succeeded")
    assert [r["path"] for r in emulator.requests()] == ["/oauth/token", RUNS_PATH]


def test_sensor_on_an_unknown_run_or_without_flow_id_says_so(stackai_conn: str, emulator: Emulator) -> None:
    seed(emulator, 3)
    sensor = FlowRunSensor(task_id="s", flowruns_conn_id=stackai_conn, run_id="nope", flow_id=STACKAI_FLOW)
    with pytest.raises(FlowRunsApiError, match="no run 'nope' in the flow's run listing"):
        sensor.poke({})
    with pytest.raises(FlowRunsConfigError, match="set flow_id on the task"):
        FlowRunSensor(task_id="s2", flowruns_conn_id=stackai_conn, run_id="nope").poke({})


@pytest.mark.parametrize(("count", "pages"), [(0, 1), (1, 1), (100, 2), (150, 2), (250, 3)])
def test_listing_pages_from_zero_until_a_short_page(
    stackai_conn: str, emulator: Emulator, count: int, pages: int
) -> None:
    ids = seed(emulator, count)
    listed = [run.id for run in FlowRunsHook(stackai_conn).list_runs(flow_id=STACKAI_FLOW)]
    assert listed == ids[::-1]
    queries = [r["query"] for r in emulator.requests() if r["path"] == RUNS_PATH]
    assert len(queries) == pages
    assert [q.split("&")[:2] for q in queries] == [[f"page={n}", "page_size=100"] for n in range(pages)]


def test_listing_filters_by_state_and_date_on_the_server(stackai_conn: str, emulator: Emulator) -> None:
    ids = seed(emulator, 24)
    emulator.set_status(ids[5], "FAILED")
    hook = FlowRunsHook(stackai_conn)
    assert [r.id for r in hook.list_runs(flow_id=STACKAI_FLOW, states=["failed"])] == [ids[5]]
    window = hook.list_runs(
        flow_id=STACKAI_FLOW,
        created_after=datetime.fromtimestamp(1.7e9 + 3600, UTC),
        created_before=datetime.fromtimestamp(1.7e9 + 3 * 3600, UTC),
    )
    assert [r.id for r in window] == [ids[2], ids[1]]
    queries = [r["query"] for r in emulator.requests()]
    assert "state=FAILED" in queries[0] and "start_date=" in queries[1] and "end_date=" in queries[1]


def test_connection_page_size_lowers_the_page(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = seed(emulator, 25)
    conn = set_connection(monkeypatch, "stackai_pages", "stackai", emulator.url, org_id=STACKAI_ORG, page_size=10)
    assert [r.id for r in FlowRunsHook(conn).list_runs(flow_id=STACKAI_FLOW)] == ids[::-1]
    assert len(emulator.requests()) == 3


def test_oauth_token_is_fetched_once_cached_renewed_on_expiry_and_after_401_and_masked(
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    masked: list[str] = []
    real_mask = stackai.mask_secret

    def mask_and_note(secret: str) -> None:
        masked.append(secret)
        real_mask(secret)

    monkeypatch.setattr(stackai, "mask_secret", mask_and_note)
    hook = FlowRunsHook(oauth_connection(monkeypatch, "stackai_oauth", emulator.url, "analyst-password"))

    def token_calls() -> list[int]:
        return [r["status"] for r in emulator.requests() if r["path"] == "/oauth/token"]

    assert hook.test_connection()[0] and hook.test_connection()[0]
    assert token_calls() == [200]
    later = time.time() + 7200  # past expires_in: the client renews before calling, no 401 needed
    monkeypatch.setattr(stackai, "time", SimpleNamespace(time=lambda: later))
    assert hook.test_connection()[0]
    assert token_calls() == [200, 200]
    assert 401 not in [r["status"] for r in emulator.requests()]

    emulator.control.post("/reset")  # the emulator forgets every token: the next call meets a 401 and renews
    assert hook.test_connection()[0]
    assert [r["status"] for r in emulator.requests()] == [401, 200, 200]
    assert len(masked) == 3 and len(set(masked)) == 3
    printed = caplog.text + "".join(capsys.readouterr())
    for secret in (*masked, "analyst-password"):
        assert redact(f"Bearer {secret}") == "Bearer ***"
        assert secret not in printed


def test_an_upload_refused_with_401_is_sent_again_whole_with_a_new_token(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, pdf: Path
) -> None:
    hook = FlowRunsHook(oauth_connection(monkeypatch, "stackai_oauth_upload", emulator.url, "analyst-password"))
    assert hook.test_connection()[0]
    emulator.reset()  # the cached token is now unknown to the emulator
    request = StartRequest(flow_id=STACKAI_FLOW, files={"doc-0": pdf}, inputs={"in-0": "x"}, task_key="af-upload")
    run = hook.start_run(request)
    assert [(r["path"].split("/")[1], r["status"]) for r in emulator.requests()] == [
        ("documents", 401),
        ("oauth", 200),
        ("documents", 200),
        ("inference", 200),
        ("analytics", 200),
    ]
    (recorded,) = emulator.runs()
    assert recorded["id"] == run.id
    assert recorded["documents"] == [{"field": "doc-0", "filename": "doc.pdf", "size": pdf.stat().st_size}]


@pytest.mark.parametrize(
    ("password", "token_answer", "message"),
    [
        ("wrong", None, r"'OAuth token' failed \(HTTP 401\): the token URL refused"),
        ("analyst-password", "{}", "answered HTTP 200 without an access_token"),
    ],
)
def test_a_refused_or_unreadable_token_is_a_clear_error(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, password: str, token_answer: str | None, message: str
) -> None:
    if token_answer is not None:
        emulator.fault("/oauth/token", 200, token_answer)
    conn = oauth_connection(monkeypatch, "stackai_badoauth", emulator.url, password, max_retries=0)
    ok, told = FlowRunsHook(conn).test_connection()
    assert not ok
    assert re.search(message, told), told
    assert password not in told
    assert [r["path"] for r in emulator.requests()] == ["/oauth/token"]


@pytest.mark.parametrize(
    ("conn_extra", "kwargs", "message"),
    [
        ({"org_id": None}, {}, "has no org_id"),
        ({"password": ""}, {}, r"has no API key: .*the OAuth password"),
        ({"token_url": "/oauth/token"}, {}, "needs both a login and the extra token_url"),
        ({"run_timeout": "soon"}, {}, "extra 'run_timeout' must be a positive number"),
        ({}, {"metadata": {"a": 1}}, "StackAI runs take no metadata"),
        ({}, {"inputs": {"user_id": "me"}}, "inputs must not set user_id"),
        ({}, {"output_path": "bogus://bucket/out.json"}, "output_path .* is not a path or URI"),
        ({}, {"max_xcom_output_bytes": -1}, "max_xcom_output_bytes must be"),
        ({}, {"flow_id": "flow_nope"}, "HTTP 404.*Flow flow_nope not found"),
        ({}, {"files": {"doc-9": "PDF"}}, "HTTP 422.*doc-9 is not a document node"),
    ],
)
def test_bad_input_starts_nothing(
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    pdf: Path,
    context: Context,
    conn_extra: dict[str, Any],
    kwargs: dict[str, Any],
    message: str,
) -> None:
    extra = {"org_id": STACKAI_ORG, "password": API_KEY, **conn_extra}
    set_connection(
        monkeypatch, "stackai_bad", "stackai", emulator.url, **{k: v for k, v in extra.items() if v is not None}
    )
    if "files" in kwargs:
        kwargs["files"] = {"doc-9": pdf}
    with pytest.raises((FlowRunsConfigError, FlowRunsApiError), match=message) as raised:
        task("stackai_bad", pdf, **kwargs).execute(context)
    assert emulator.runs() == []
    if raised.type is FlowRunsConfigError:
        assert emulator.requests() == [], "checked before the first request"
