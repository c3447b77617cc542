"""Stream output files into object storage, counting and hashing the bytes as they pass.

Two clients of the hook's, kept apart on purpose: files the platform's API serves go through the client that
carries the connection's credentials (``FlowRunsClient.stream``, as every other call does); presigned URLs
go through one that carries none (``FlowRunsClient.stream_presigned``), so the API key never reaches the
storage host that signed URL points at. Each attempt asks for a fresh presigned URL just before fetching
it, so a retry never meets an expired one. The URL itself is a bearer credential for its file: it is never
logged nor put in an error.

Both clients run on the hook's deadline transport (directly or through the proxies the environment names),
so no host can hold the task: the answer's headers must come within the connection's ``timeout``, and so
must each next ``CHUNK_BYTES`` of the file (a large file takes as long as it takes; a host trickling it
does not). Only ``200`` with the file's bytes is saved: neither the platforms' file endpoints nor their
presigned URLs are documented to redirect, so a redirect is refused with an error rather than saved as
the file, or followed to a host that was never named. A presigned URL is fetched only once
``airflow_flowruns.outputs.presigned`` has found it well-formed and on a public address.

Files are counted as they are written, decompressed, and decompressed a piece at a time: one file may not
pass the connection's ``max_output_file_bytes``, nor all the files of one landing its ``max_landing_bytes``
(a ``FileDownloader`` lands one run, so it keeps the running total). An answer whose ``Content-Length``
already says more is refused before anything is written; an endless body or a gzip bomb is stopped at the
limit. Either way the download fails, and the landing with it, before its staged files replace anything.
Only the encodings both clients ask for (gzip, deflate) are decoded; a file in any other is refused rather
than landed still encoded and counted by its compressed size.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import httpx
from tenacity import Retrying, retry_if_exception, stop_after_attempt

from airflow_flowruns.client.body import BodyTooLarge, BoundedBody, UnknownEncoding
from airflow_flowruns.client.deadline import start_deadline
from airflow_flowruns.client.errors import retry_after, scrub
from airflow_flowruns.client.retry import PastDeadline, WaitRetryAfter
from airflow_flowruns.exceptions import FlowRunsApiError, FlowRunsResponseError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.outputs.model import ApiDownload, Download, PresignedDownload
from airflow_flowruns.outputs.presigned import checked_url

CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Fetched:
    size: int
    sha256: str


@dataclass(frozen=True)
class _Cap:
    """The most bytes the next file may have, and the extra that sets it."""

    limit: int
    extra: str


class FileDownloader:
    """Downloads the output files of one connection's runs, through the hook's client."""

    def __init__(self, hook: FlowRunsHook) -> None:
        self._client = hook.client
        self._platform = hook.platform
        self._options = options = hook.client.options
        self._landed = 0
        """Bytes of the files fetched so far: one downloader lands one run, whose files max_landing_bytes bounds."""
        self._retrying: dict[str, Any] = {
            "retry": retry_if_exception(_retryable),
            "wait": WaitRetryAfter(options),
            "stop": stop_after_attempt(options.max_retries + 1) | PastDeadline(),
            "reraise": True,
        }

    def fetch(self, download: Download, open_target: Any, name: str | None = None) -> Fetched:
        """Write the file through ``open_target()`` (a fresh binary writer per attempt), streamed; ``name``
        (where it lands) names it in errors, else the API path it is asked for by."""
        file = name or (download.call if isinstance(download, ApiDownload) else download.lookup).path
        cap = self._cap()
        try:
            for attempt in Retrying(**self._retrying):
                with (
                    attempt,
                    self._response(download) as response,
                    self._bounded(response.headers, cap, file) as body,
                    open_target() as out,
                ):
                    return self._counted(_copy(response, body, out, self._options.timeout))
        except httpx.TransportError as exc:  # named by its type only: its message may hold the presigned URL
            raise FlowRunsApiError(
                platform=self._platform.label,
                call="download file",
                status=None,
                detail=f"{type(exc).__name__} while downloading",
                retryable=True,
            ) from None
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def _cap(self) -> _Cap:
        room = self._options.max_landing_bytes - self._landed
        if self._options.max_output_file_bytes <= room:
            return _Cap(self._options.max_output_file_bytes, "max_output_file_bytes")
        return _Cap(room, "max_landing_bytes")

    def _counted(self, fetched: Fetched) -> Fetched:
        self._landed += fetched.size
        return fetched

    @contextmanager
    def _bounded(self, headers: httpx.Headers, cap: _Cap, file: str) -> Iterator[BoundedBody]:
        """The body decoded within ``cap``; passing it, even by its ``Content-Length`` before a byte is read,
        is the provider's error naming the file, its size, the limit and the extra that sets it."""
        named = f"{self._platform.label} output file {scrub(self._platform, file)!r}"
        try:
            yield BoundedBody(headers, cap.limit, keep=False)
        except BodyTooLarge as exc:
            size = f"its Content-Length says {exc.declared}" if exc.seen == 0 else f"stopped after {exc.seen}"
            others = f" after the {self._landed} bytes of the landing's other files" if self._landed else ""
            raise FlowRunsResponseError(
                f"{named} is larger than the {cap.limit} bytes the connection's {cap.extra} leaves it{others} "
                f"({size} bytes, counted decompressed): the run is not landed, and its previous landing, if any, "
                f"stays as it was. Raise the extra {cap.extra} if the file is genuine; check the connection's "
                "host otherwise."
            ) from None
        except UnknownEncoding as exc:
            raise FlowRunsResponseError(
                f"{named} came in content-encoding {scrub(self._platform, str(exc))[:40]!r}, which this provider "
                "did not ask for and does not decode."
            ) from None
        except zlib.error:
            raise FlowRunsResponseError(f"{named} came compressed but does not decompress.", retryable=True) from None

    @contextmanager
    def _response(self, download: Download) -> Iterator[httpx.Response]:
        presigned = isinstance(download, PresignedDownload)
        what = "download file" + (" (presigned URL)" if presigned else "")
        if isinstance(download, ApiDownload):
            streamed = self._client.stream(download.call)
        else:
            streamed = self._client.stream_presigned(self._presigned_url(download))
        with streamed as response:
            if response.is_redirect:
                raise FlowRunsResponseError(
                    f"{self._platform.label} answered '{what}' with a redirect (HTTP {response.status_code}), which "
                    "its API does not document for files: nothing was saved, nor was the redirect followed. "
                    "Report it to the airflow-flowruns maintainers if the platform now redirects downloads."
                )
            if response.status_code >= 400:
                raise FlowRunsApiError(
                    platform=self._platform.label,
                    call=what,
                    status=response.status_code,
                    detail="the file could not be downloaded",
                    # a presigned URL that expired meanwhile is asked for again on the next attempt
                    retryable=response.status_code in (403, 429) if presigned else _retry_status(response),
                    retry_after=retry_after(response.headers),
                )
            if response.status_code != 200:
                raise FlowRunsResponseError(
                    f"{self._platform.label} answered '{what}' with HTTP {response.status_code} instead of the "
                    "file's bytes (HTTP 200): nothing was saved."
                )
            yield response

    def _presigned_url(self, download: PresignedDownload) -> str:
        body = self._client.call(download.lookup)
        url = body.get(download.url_field) if isinstance(body, Mapping) else None
        if not isinstance(url, str) or not url:
            raise FlowRunsResponseError(
                f"{self._platform.label} answered '{download.lookup.name}' without a {download.url_field}; "
                "the file cannot be downloaded."
            )
        allow_private = self._options.allow_private_presigned_urls
        return checked_url(self._platform, download.url_field, url, allow_private=allow_private)


def _copy(response: httpx.Response, body: BoundedBody, out: IO[bytes], seconds: float) -> Fetched:
    """Stream the body to ``out``, decoded by ``body`` within its limit a piece at a time; once a piece is
    written, the next must arrive within ``seconds``."""
    digest = hashlib.sha256()
    size = 0
    for piece in _decoded(response, body):
        out.write(piece)
        digest.update(piece)
        size += len(piece)
        start_deadline(seconds)
    return Fetched(size, digest.hexdigest())


def _decoded(response: httpx.Response, body: BoundedBody) -> Iterator[bytes]:
    for chunk in response.iter_raw(CHUNK_BYTES):
        yield from body.decoded(chunk)
    yield body.rest()


def _retry_status(response: httpx.Response) -> bool:
    return response.status_code == 429 or response.status_code >= 500


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, FlowRunsApiError | FlowRunsResponseError):
        return exc.retryable
    return isinstance(exc, httpx.TransportError)
