"""Output file downloads against hosts that misbehave: one that trickles its answer cannot hold the task
past the connection's timeout, and a redirect is never saved as the file nor followed."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import IO

import pytest
from airflow.providers.common.compat.sdk import Context
from tenacity import RetryCallState

from airflow_flowruns.client.ratelimit import scheduler_for
from airflow_flowruns.client.retry import WaitRetryAfter
from airflow_flowruns.exceptions import FlowRunsApiError, FlowRunsResponseError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.operators.flow_run import FlowRunOperator
from airflow_flowruns.operators.outputs import FlowRunOutputsOperator
from airflow_flowruns.outputs.download import FileDownloader
from airflow_flowruns.outputs.model import ApiDownload
from airflow_flowruns.platforms.base import ApiCall
from airflow_flowruns.platforms.extend.emulator import EXTEND_SPLIT_WORKFLOW
from support.emulator import Emulator, set_connection
from support.hostile_server import HostileServer

HANG_GUARD = 120.0
"""Only so that a regression fails the test instead of freezing the suite; no test asserts on time."""


def download_from(
    hostile: HostileServer, monkeypatch: pytest.MonkeyPatch, mode: str, **extra: float
) -> tuple[BaseException, int]:
    """What downloading a Noxus file from ``hostile`` (answering as ``mode``) raised, and how many times the
    file was opened for writing."""
    hostile.mode = mode
    hostile.requests.clear()
    conn = set_connection(
        monkeypatch, "hostile_files", "noxus", hostile.url, **{"timeout": 1, "max_retries": 1, **extra}
    )
    opened: list[IO[bytes]] = []

    def open_target() -> IO[bytes]:
        opened.append(io.BytesIO())
        return opened[-1]

    raised: list[BaseException] = []

    def fetch() -> None:
        hook = FlowRunsHook(conn)
        try:
            FileDownloader(hook).fetch(ApiDownload(ApiCall("download file", "GET", "/v1/file/f_1")), open_target)
        except BaseException as exc:
            raised.append(exc)
        finally:
            hook.client.close()

    worker = threading.Thread(target=fetch, daemon=True)  # a daemon: a hang cannot keep the suite from ending
    worker.start()
    worker.join(HANG_GUARD)
    assert not worker.is_alive(), "the download is still running"
    assert raised, "the hostile answer was saved as the file"
    return raised[0], len(opened)


@pytest.mark.parametrize("mode", ["trickled body", "trickled headers"])
def test_a_host_trickling_a_file_fails_the_download_at_the_connections_timeout(
    mode: str, hostile: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    error, _ = download_from(hostile, monkeypatch, mode)
    assert isinstance(error, FlowRunsApiError), repr(error)
    assert "'download file' failed (no response): ReadTimeout while downloading" in str(error)
    assert len(hostile.requests) == 2  # the first try and the connection's one retry


@pytest.mark.parametrize("mode", ["Retry-After an hour", "Retry-After inf"])
def test_a_429_on_a_download_waits_its_retry_after_capped_by_retry_max_wait(
    mode: str, hostile: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backoff from ``retry_min_wait`` would wait a hundredth of a second: the platform asked for longer."""
    waits: list[float] = []

    class RecordedWait(WaitRetryAfter):
        def __call__(self, state: RetryCallState) -> float:
            waits.append(super().__call__(state))
            return waits[-1]

    monkeypatch.setattr("airflow_flowruns.outputs.download.WaitRetryAfter", RecordedWait)
    error, _ = download_from(hostile, monkeypatch, mode, retry_min_wait=0.01, retry_max_wait=0.5)
    assert isinstance(error, FlowRunsApiError) and error.status == 429, repr(error)
    assert waits and set(waits) == {0.5}, waits  # tenacity also computes the wait it then stops before
    assert len(hostile.requests) == 2


def test_a_file_the_api_serves_waits_its_turn_and_its_429_is_heard_by_the_connections_scheduler(
    hostile: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file endpoint is the platform's API: a 429 there pauses every call on the connection, as any call's does."""
    scheduler = scheduler_for("hostile_files", None)
    turns: list[None] = []
    heard: list[tuple[int, float | None, float]] = []
    monkeypatch.setattr(scheduler, "wait", lambda: turns.append(None))
    monkeypatch.setattr(scheduler, "answered", lambda *answer: heard.append(answer))
    error, _ = download_from(hostile, monkeypatch, "Retry-After an hour", retry_min_wait=0.01, retry_max_wait=0.5)
    assert isinstance(error, FlowRunsApiError) and error.status == 429, repr(error)
    assert len(turns) == 2 and heard == [(429, 3600.0, 0.5)] * 2


def test_a_redirect_from_a_file_endpoint_is_neither_saved_nor_followed(
    hostile: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    error, opened = download_from(hostile, monkeypatch, "redirect with a run in its body")
    assert isinstance(error, FlowRunsResponseError), repr(error)
    assert "answered 'download file' with a redirect (HTTP 302)" in str(error)
    assert opened == 0  # nothing was written, not even an empty file
    assert [r["path"] for r in hostile.requests] == ["/v1/file/f_1"]  # the redirect was not followed


def test_a_redirect_from_a_presigned_url_fails_the_landing_without_a_manifest(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, context: Context
) -> None:
    conn = set_connection(monkeypatch, "extend_redirect", "extend", emulator.url)
    document = tmp_path / "packet.pdf"
    document.write_bytes(b"%PDF-1.4\n%%EOF\n")
    run = FlowRunOperator(
        task_id="t", flowruns_conn_id=conn, flow_id=EXTEND_SPLIT_WORKFLOW, files={"file": document}, poll_interval=0.05
    ).execute(context)
    emulator.fault("/_storage/", 307, "<Error/>", headers={"Location": f"{emulator.url}/_elsewhere"}, count=100)
    land = FlowRunOutputsOperator(task_id="land", flowruns_conn_id=conn, run=run, destination=str(tmp_path / "out"))
    with pytest.raises(FlowRunsResponseError, match=r"'download file \(presigned URL\)' with a redirect \(HTTP 307\)"):
        land.execute(context)
    assert not list((tmp_path / "out").rglob("_MANIFEST.json"))
    assert not [r for r in emulator.requests() if r["path"].startswith("/_elsewhere")]
