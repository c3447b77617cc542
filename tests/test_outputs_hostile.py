"""Output downloads from hosts that answer to harm: bodies past the connection's size limits (endless, a huge
``Content-Length``, a gzip bomb), presigned URLs into the worker's own network, and presigned URLs that are not
URLs at all. Each fails with the provider's own error, writes at most the limit, and keeps the run's previous
landing as it was."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_flowruns.client.options import HttpOptions
from airflow_flowruns.client.sync_client import FlowRunsClient
from airflow_flowruns.exceptions import FlowRunsConfigError, FlowRunsResponseError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.outputs.download import Fetched, FileDownloader
from airflow_flowruns.outputs.landing import Landing, land_run
from airflow_flowruns.outputs.model import Download, PresignedDownload
from airflow_flowruns.platforms.base import ApiCall, FlowRun, RunState
from support.emulator import API_KEY, set_connection
from support.hostile_server import MODES, Exchange, HostileServer

CAP = 1024 * 1024
"""The per-file limit the tests set: above the ~250 KiB the gzip bomb travels as, far below what it expands to."""
PAST_THE_CAP = 16 * CAP
"""What the endless and huge answers send before the host gives up: far past the cap, yet bounded, so that
without the cap a test fails instead of filling the disk."""
FILE = b"%PDF-1.4\n% the report as first landed\n%%EOF\n"
SIGNATURE = "X-Amz-Signature=5ecret5ignature"
LOOKUP = ApiCall("get file", "GET", "/files/file_1")


@pytest.fixture
def host(hostile: HostileServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[HostileServer]:
    """The module's hostile server, its answer set by the test and cleared after; no proxy in between."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    hostile.requests.clear()
    yield hostile
    hostile.answer = None


def the_file(ex: Exchange) -> None:
    ex.send(200, FILE, Content_Type="application/pdf")


def endless(ex: Exchange) -> None:
    """A chunked body that does not end before ``PAST_THE_CAP``; then the host hangs up mid-body."""
    block = b"%" * 65536
    ex.send_chunked(iter([block] * (PAST_THE_CAP // len(block))))
    ex.sock.shutdown(socket.SHUT_WR)


def huge(ex: Exchange) -> None:
    """A tebibyte declared, ``PAST_THE_CAP`` of it sent; then the host hangs up mid-body."""
    ex.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1099511627776\r\n\r\n" + b" " * PAST_THE_CAP)
    ex.sock.shutdown(socket.SHUT_WR)


HOSTILE_FILES: dict[str, Callable[[Exchange], None]] = {
    "an endless body": endless,
    "a huge Content-Length": huge,
    "a gzip bomb": MODES["gzip bomb"],
}


def noxus_run(finished_at: str, *files: str) -> FlowRun:
    """A finished Noxus run whose output ``report`` is the files ``files`` (ids), served by ``GET /v1/file/{id}``."""
    report = [{"id": file_id, "uri": f"spot://{file_id}", "name": f"{file_id}.pdf"} for file_id in files]
    raw = {"id": "run_1", "finished_at": finished_at, "output": {"report": report if len(report) > 1 else report[0]}}
    return FlowRun(
        id="run_1", flow_id="flow_1", platform="noxus", state=RunState.SUCCEEDED, status="completed", raw=raw
    )


def land(conn: str, run: FlowRun, out: Path) -> Landing:
    hook = FlowRunsHook(conn)
    try:
        return land_run(hook, run, ObjectStoragePath(str(out)))
    finally:
        hook.client.close()


def snapshot(folder: Path) -> dict[Path, tuple[bytes, int]]:
    return {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in folder.rglob("*") if path.is_file()}


class Counted:
    """A file opened for a download, counting what is written to it into ``sizes[-1]``."""

    def __init__(self, opened: IO[bytes], sizes: list[int]) -> None:
        self._opened = opened
        self._sizes = sizes

    def __enter__(self) -> Counted:
        self._opened.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._opened.__exit__(*exc)

    def write(self, data: bytes) -> int:
        self._sizes[-1] += len(data)
        return self._opened.write(data)


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The bytes written to each file a download opened, in order, however the landing opens its files."""
    sizes: list[int] = []
    fetch = FileDownloader.fetch

    def counted(
        self: FileDownloader, download: Download, open_target: Callable[[], IO[bytes]], *args: Any, **kwargs: Any
    ) -> Fetched:
        def open_counted() -> Counted:
            sizes.append(0)
            return Counted(open_target(), sizes)

        return fetch(self, download, open_counted, *args, **kwargs)

    monkeypatch.setattr(FileDownloader, "fetch", counted)
    return sizes


@pytest.mark.parametrize("answer", HOSTILE_FILES)
def test_an_output_file_past_max_output_file_bytes_fails_the_landing_and_keeps_the_previous_one(
    answer: str, host: HostileServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, written: list[int]
) -> None:
    conn = set_connection(monkeypatch, "hostile_outputs", "noxus", host.url, max_output_file_bytes=CAP, max_retries=0)
    host.answer = the_file
    first = land(conn, noxus_run("2026-01-01T00:00:00Z", "f_1"), tmp_path)
    folder = Path(first.path)
    landed = snapshot(folder)
    assert (folder / "files/f_1/f_1.pdf").read_bytes() == FILE and len(landed) == 4

    host.answer = HOSTILE_FILES[answer]
    host.requests.clear()
    written.clear()
    with pytest.raises(FlowRunsResponseError) as failed:
        land(conn, noxus_run("2026-01-02T00:00:00Z", "f_1"), tmp_path)  # a newer run: landed again
    message = str(failed.value)
    assert re.search(
        f"output file '[^']*f_1[^']*' is larger than the {CAP} bytes the connection's max_output_file_bytes", message
    )
    assert "Raise the extra max_output_file_bytes" in message and "previous landing" in message
    assert snapshot(folder) == landed  # not a byte, not a timestamp of the first landing changed
    assert [r["path"] for r in host.requests] == ["/v1/file/f_1"]  # refused, not retried
    if answer == "a huge Content-Length":
        assert written == []  # refused on its headers, before the file was opened
    else:
        assert len(written) == 1 and CAP - 65536 < written[0] <= CAP


def test_the_files_of_one_landing_together_stop_at_max_landing_bytes(
    host: HostileServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, written: list[int]
) -> None:
    """Each file is under max_output_file_bytes; the second passes what max_landing_bytes leaves it."""
    part = b"%" * (600 * 1024)
    host.answer = lambda ex: ex.send(200, part)
    conn = set_connection(monkeypatch, "hostile_landing", "noxus", host.url, max_landing_bytes=CAP, max_retries=0)
    with pytest.raises(FlowRunsResponseError) as failed:
        land(conn, noxus_run("2026-01-01T00:00:00Z", "f_1", "f_2"), tmp_path)
    message = str(failed.value)
    assert re.search(f"file '[^']*f_2[^']*' is larger than the {CAP - len(part)} bytes the connection's ", message)
    assert f"max_landing_bytes leaves it after the {len(part)} bytes of the landing's other files" in message
    assert f"its Content-Length says {len(part)} bytes" in message
    assert written == [len(part)]  # the second file was refused before it was opened
    assert not list(tmp_path.rglob("_MANIFEST.json"))


class Sink:
    """A file target that counts what it is given and keeps none of it."""

    def __init__(self) -> None:
        self.size = 0
        self.opened = 0

    def open(self) -> Sink:
        self.opened += 1
        self.size = 0
        return self

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)


def fetch_presigned(conn: str, sink: Sink) -> Fetched:
    hook = FlowRunsHook(conn)
    try:
        return FileDownloader(hook).fetch(PresignedDownload(LOOKUP, "presignedUrl"), sink.open)
    finally:
        hook.client.close()


def storage(url: str, serve: Callable[[Exchange], None] = the_file) -> Callable[[Exchange], None]:
    """A platform whose file lookup answers with ``url``, and whose storage (any other path) answers as ``serve``."""

    def answer(ex: Exchange) -> None:
        if ex.path == LOOKUP.path:
            ex.send(200, json.dumps({"id": "file_1", "presignedUrl": url}).encode())
        else:
            serve(ex)

    return answer


def test_a_gzip_bomb_is_decompressed_a_piece_at_a_time(host: HostileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """32 MiB of zeros land from ~250 KiB on the wire, and no more than a few MiB are ever held at once."""
    limit = 32 * CAP
    host.answer = storage(f"{host.url}/bucket/bomb?{SIGNATURE}", MODES["gzip bomb"])
    conn = set_connection(monkeypatch, "hostile_bomb", "noxus", host.url, max_output_file_bytes=limit, max_retries=0)
    sink = Sink()
    tracemalloc.start()
    try:
        with pytest.raises(FlowRunsResponseError, match="max_output_file_bytes"):
            fetch_presigned(conn, sink)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.size == limit  # written up to the limit exactly, and not a byte past it
    assert peak < 8 * CAP, f"{peak >> 20} MiB held at once while decompressing"
    assert host.requests[-1]["headers"]["accept-encoding"] == "gzip, deflate"


@pytest.mark.parametrize(
    "where",
    [
        "169.254.169.254",
        "10.0.0.1",
        "0.0.0.0",
        "[fe80::1]",
        "[fd00::1]",
        "[::ffff:169.254.169.254]",
        "metadata.google.internal",
    ],
)
def test_a_presigned_url_into_the_workers_own_network_is_refused_before_any_request(
    where: str, host: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API is on loopback here (so loopback storage would be allowed), yet nothing else private is."""
    fetched: list[str] = []
    stream_presigned = FlowRunsClient.stream_presigned

    def recorded(self: FlowRunsClient, url: str) -> Any:
        fetched.append(url)
        return stream_presigned(self, url)

    monkeypatch.setattr(FlowRunsClient, "stream_presigned", recorded)
    host.answer = storage(f"http://{where}/latest/meta-data/iam?{SIGNATURE}")
    conn = set_connection(monkeypatch, "hostile_presigned", "noxus", host.url, timeout=1, max_retries=0)
    sink = Sink()
    with pytest.raises(FlowRunsResponseError) as failed:
        fetch_presigned(conn, sink)
    message = str(failed.value)
    assert f"gave a presignedUrl on host {where.strip('[]')!r}, which " in message
    assert "extra allow_private_presigned_urls" in message
    assert "Signature" not in message and "meta-data" not in message
    assert fetched == [] and sink.opened == 0
    assert [r["path"] for r in host.requests] == [LOOKUP.path]


@pytest.fixture
def named_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names under ``flowruns.test`` resolve to loopback, as a DNS answer pointing inward would."""
    resolve = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        return resolve("127.0.0.1" if str(host).endswith(".flowruns.test") else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.usefixtures("named_hosts")
@pytest.mark.parametrize("allowed", [False, True])
def test_a_name_resolving_to_loopback_is_fetched_only_when_the_connection_allows_private_presigned_urls(
    allowed: bool, host: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API is reached by name, so it is not on loopback as far as the connection says."""
    port = host.server_address[1]
    host.answer = storage(f"http://storage.flowruns.test:{port}/bucket/report.pdf?{SIGNATURE}")
    api = f"http://api.flowruns.test:{port}"
    conn = set_connection(
        monkeypatch, "named_presigned", "noxus", api, max_retries=0, allow_private_presigned_urls=allowed
    )
    sink = Sink()
    if allowed:
        assert fetch_presigned(conn, sink) == Fetched(len(FILE), hashlib.sha256(FILE).hexdigest())
        assert [r["path"] for r in host.requests] == [LOOKUP.path, f"/bucket/report.pdf?{SIGNATURE}"]
        return
    with pytest.raises(FlowRunsResponseError) as failed:
        fetch_presigned(conn, sink)
    assert "on host 'storage.flowruns.test', which resolves to 127.0.0.1, a loopback address" in str(failed.value)
    assert "Signature" not in str(failed.value) and sink.opened == 0
    assert [r["path"] for r in host.requests] == [LOOKUP.path]


@pytest.mark.usefixtures("named_hosts")
def test_loopback_storage_is_fetched_while_the_api_is_on_loopback_too(
    host: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local emulator or tunnel serves its own files: the case of every emulator test and end-to-end run."""
    port = host.server_address[1]
    host.answer = storage(f"http://storage.flowruns.test:{port}/bucket/report.pdf?{SIGNATURE}")
    conn = set_connection(monkeypatch, "loopback_presigned", "noxus", host.url, max_retries=0)
    assert fetch_presigned(conn, Sink()).size == len(FILE)


@pytest.mark.parametrize(
    "url",
    [
        f"http://[::1/bucket/report.pdf?{SIGNATURE}",
        f"://storage/bucket/report.pdf?{SIGNATURE}",
        f"{API_KEY}://storage/bucket/report.pdf?{SIGNATURE}",
        f"http://storage:{API_KEY}/bucket/report.pdf?{SIGNATURE}",
        f"http:///bucket/report.pdf?{SIGNATURE}",
    ],
)
def test_a_presigned_url_that_is_not_a_url_fails_with_the_providers_error_and_no_secret(
    url: str, host: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    host.answer = storage(url)
    conn = set_connection(monkeypatch, "malformed_presigned", "noxus", host.url, max_retries=0)
    with pytest.raises(FlowRunsResponseError) as failed:
        fetch_presigned(conn, Sink())
    message = str(failed.value)
    assert message.startswith("Noxus gave a presignedUrl that is not ")
    assert API_KEY not in message and "Signature" not in message and "bucket" not in message
    assert failed.value.__cause__ is None and (failed.value.__context__ is None or failed.value.__suppress_context__)


def test_a_file_in_an_encoding_never_asked_for_is_not_landed_as_it_came(
    host: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpx would pass an unknown encoding through undecoded, uncounted by what it decompresses to."""
    host.answer = storage(f"{host.url}/f?{SIGNATURE}", lambda ex: ex.send(200, b"\x1b\x00", Content_Encoding="br"))
    conn = set_connection(monkeypatch, "brotli_presigned", "noxus", host.url, max_retries=0)
    sink = Sink()
    with pytest.raises(
        FlowRunsResponseError, match="came in content-encoding 'br', which this provider did not ask for"
    ):
        fetch_presigned(conn, sink)
    assert sink.opened == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"max_output_file_bytes": 0}, "extra 'max_output_file_bytes' must be a positive finite number"),
        ({"max_landing_bytes": "lots"}, "extra 'max_landing_bytes' must be a number"),
        ({"allow_private_presigned_urls": "yes"}, "extra 'allow_private_presigned_urls' must be true or false"),
    ],
)
def test_bad_download_limits_name_the_extra(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(FlowRunsConfigError, match=message):
        HttpOptions.from_extras(extra, "flowruns_limits")


def test_download_limits_read_from_the_extras() -> None:
    options = HttpOptions.from_extras(
        {"max_output_file_bytes": "5", "max_landing_bytes": 7, "allow_private_presigned_urls": "True"}, "c"
    )
    assert (options.max_output_file_bytes, options.max_landing_bytes, options.allow_private_presigned_urls) == (
        5,
        7,
        True,
    )
    assert (HttpOptions().max_output_file_bytes, HttpOptions().max_landing_bytes) == (1024**3, 10 * 1024**3)
