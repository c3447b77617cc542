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
the file, or followed to a host that was never named.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlsplit

import httpx
from tenacity import Retrying, retry_if_exception, stop_after_attempt

from airflow_flowruns.client.deadline import start_deadline
from airflow_flowruns.client.errors import retry_after
from airflow_flowruns.client.retry import PastDeadline, WaitRetryAfter
from airflow_flowruns.exceptions import FlowRunsApiError, FlowRunsResponseError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.outputs.model import ApiDownload, Download, PresignedDownload

CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Fetched:
    size: int
    sha256: str


class FileDownloader:
    """Downloads the output files of one connection's runs, through the hook's client."""

    def __init__(self, hook: FlowRunsHook) -> None:
        self._client = hook.client
        self._platform = hook.platform
        options = hook.client.options
        self._seconds = options.timeout
        self._retrying: dict[str, Any] = {
            "retry": retry_if_exception(_retryable),
            "wait": WaitRetryAfter(options),
            "stop": stop_after_attempt(options.max_retries + 1) | PastDeadline(),
            "reraise": True,
        }

    def fetch(self, download: Download, open_target: Any) -> Fetched:
        """Write the file through ``open_target()`` (a fresh binary writer per attempt), streamed."""
        try:
            for attempt in Retrying(**self._retrying):
                with attempt, self._response(download) as response, open_target() as out:
                    return _copy(response, out, self._seconds)
        except httpx.TransportError as exc:  # named by its type only: its message may hold the presigned URL
            raise FlowRunsApiError(
                platform=self._platform.label,
                call="download file",
                status=None,
                detail=f"{type(exc).__name__} while downloading",
                retryable=True,
            ) from None
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

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
        scheme = urlsplit(url).scheme
        api_scheme = urlsplit(self._platform.settings.base_url).scheme
        if scheme not in ("https", api_scheme):
            raise FlowRunsResponseError(
                f"{self._platform.label} gave a {download.url_field} with scheme {scheme!r}; only https "
                "(or the API's own scheme) is fetched."
            )
        return url


def _copy(response: httpx.Response, out: IO[bytes], seconds: float) -> Fetched:
    """Stream the body to ``out``; each next chunk must arrive within ``seconds``."""
    digest = hashlib.sha256()
    size = 0
    for chunk in response.iter_bytes(CHUNK_BYTES):
        out.write(chunk)
        digest.update(chunk)
        size += len(chunk)
        start_deadline(seconds)
    return Fetched(size, digest.hexdigest())


def _retry_status(response: httpx.Response) -> bool:
    return response.status_code == 429 or response.status_code >= 500


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, FlowRunsApiError | FlowRunsResponseError):
        return exc.retryable
    return isinstance(exc, httpx.TransportError)
