"""Stream output files into object storage, counting and hashing the bytes as they pass.

Two clients, kept apart on purpose: files the platform's API serves go through a client that carries the
connection's credentials (as every other call does); presigned URLs go through a client that carries
none, so the API key never reaches the storage host that signed URL points at. Each attempt asks for a
fresh presigned URL just before fetching it, so a retry never meets an expired one. The URL itself is
a bearer credential for its file: it is never logged nor put in an error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlsplit

import httpx
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from airflow_flowruns.exceptions import FlowRunsApiError, FlowRunsResponseError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.hooks.http.auth import bounded_auth
from airflow_flowruns.outputs.model import ApiDownload, Download, PresignedDownload

CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Fetched:
    size: int
    sha256: str


class FileDownloader:
    """Downloads the output files of one connection's runs; close it when done."""

    def __init__(self, hook: FlowRunsHook) -> None:
        self._client = hook.client
        self._platform = hook.platform
        options = hook.client.options
        verify = options.ssl_context()
        settings = self._platform.settings
        self._api = httpx.Client(
            base_url=settings.base_url,
            headers=self._platform.headers(),
            auth=bounded_auth(self._platform, options.max_response_bytes),
            timeout=options.timeout,
            verify=verify,
        )
        self._presigned = httpx.Client(timeout=options.timeout, verify=verify, follow_redirects=True)
        self._retrying: dict[str, Any] = {
            "retry": retry_if_exception(_retryable),
            "wait": wait_exponential_jitter(initial=options.retry_min_wait, max=options.retry_max_wait),
            "stop": stop_after_attempt(options.max_retries + 1),
            "reraise": True,
        }

    def fetch(self, download: Download, open_target: Any) -> Fetched:
        """Write the file through ``open_target()`` (a fresh binary writer per attempt), streamed."""
        try:
            for attempt in Retrying(**self._retrying):
                with attempt, self._response(download) as response, open_target() as out:
                    return _copy(response, out)
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
        if isinstance(download, ApiDownload):
            request = self._api.build_request(download.call.method, download.call.path, params=download.call.params)
            presigned = False
        else:
            request = self._presigned.build_request("GET", self._presigned_url(download))
            presigned = True
        response = (self._presigned if presigned else self._api).send(request, stream=True)
        try:
            if response.status_code >= 400:
                raise FlowRunsApiError(
                    platform=self._platform.label,
                    call="download file" + (" (presigned URL)" if presigned else ""),
                    status=response.status_code,
                    detail="the file could not be downloaded",
                    # a presigned URL that expired meanwhile is asked for again on the next attempt
                    retryable=response.status_code in (403, 429) if presigned else _retry_status(response),
                )
            yield response
        finally:
            response.close()

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

    def close(self) -> None:
        self._api.close()
        self._presigned.close()


def _copy(response: httpx.Response, out: IO[bytes]) -> Fetched:
    digest = hashlib.sha256()
    size = 0
    for chunk in response.iter_bytes(CHUNK_BYTES):
        out.write(chunk)
        digest.update(chunk)
        size += len(chunk)
    return Fetched(size, digest.hexdigest())


def _retry_status(response: httpx.Response) -> bool:
    return response.status_code == 429 or response.status_code >= 500


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, FlowRunsApiError | FlowRunsResponseError):
        return exc.retryable
    return isinstance(exc, httpx.TransportError)
