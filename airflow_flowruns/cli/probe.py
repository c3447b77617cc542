"""``doctor``'s first contact: one request to the base URL carrying none of the connection's credentials, and
what its failure says about the scheme and TLS, judged as the clients judge it (``airflow_flowruns.client.tls``).
"""

from __future__ import annotations

import httpx

from airflow_flowruns.cli.checks import Check, Outcome, failed, ok
from airflow_flowruns.client import FlowRunsClient
from airflow_flowruns.client.proxies import environment_proxy
from airflow_flowruns.client.tls import (
    SECOND_QUESTION_SECONDS,
    TLS_PORT_REFUSING_PLAIN_HTTP,
    SchemeCheck,
    address,
    speaks_tls,
    tls_behind_http,
    tls_error,
)
from airflow_flowruns.platforms.values import is_loopback

NAME = "scheme and TLS"


def probe(client: FlowRunsClient) -> Check:
    url = httpx.URL(client.platform.settings.base_url)
    try:
        with client.stream_presigned(str(url)) as response:
            return answered(client, url, response.status_code)
    except httpx.TransportError as exc:
        return unanswered(url, exc, client.options.timeout)


def answered(client: FlowRunsClient, url: httpx.URL, status: int) -> Check:
    """An answer came. Over ``http`` a 400 may be a TLS server's answer to plain HTTP (nginx's "plain HTTP request
    was sent to HTTPS port"), so the server is then asked whether it speaks TLS."""
    where = f"{url.scheme}://{url.netloc.decode()}"
    if url.scheme == "http" and status == TLS_PORT_REFUSING_PLAIN_HTTP and _direct(url) and speaks_tls(url):
        mistake = tls_behind_http(address(url))
        return failed(NAME, mistake.detail, mistake.fix)
    if url.scheme == "http" and not is_loopback(url.host):
        return Check(
            NAME,
            Outcome.WARN,
            f"{where} answered (HTTP {status}) over plain HTTP: the API key crosses the network in clear",
            "use the API's https:// address.",
        )
    if url.scheme == "https" and client.options.verify is False:
        return Check(
            NAME,
            Outcome.WARN,
            f"{where} answered (HTTP {status}); its certificate is not checked (verify=false), so "
            "anyone on the network path can read the key",
            "set the extra verify to the path of the CA bundle instead.",
        )
    tls = "certificate verified" if url.scheme == "https" else "plain HTTP on this machine"
    return ok(NAME, f"{where} answered (HTTP {status}); {tls}")


def unanswered(url: httpx.URL, exc: httpx.TransportError, timeout: float) -> Check:
    """Why the base URL gave no answer: a mistake in its scheme or the server's certificate, as the clients judge
    it (``SchemeCheck``), else a host that did not answer or cannot be reached."""
    check = SchemeCheck(str(url), SECOND_QUESTION_SECONDS)
    mistake = check.mistake(exc)
    if mistake is not None:
        return failed(NAME, mistake.detail, mistake.fix)
    if isinstance(exc, httpx.TimeoutException):
        return failed(
            NAME,
            f"no answer from {check.where} within {timeout:g} s",
            "check the host and the network; raise the extra timeout if the API is slow to answer.",
        )
    cause = tls_error(exc) or exc
    return failed(
        NAME,
        f"cannot reach {check.where} ({type(cause).__name__}: {cause})",
        "check the host name and port, and that this machine reaches them (firewall, HTTPS_PROXY and NO_PROXY).",
    )


def _direct(url: httpx.URL) -> bool:
    return environment_proxy(url) is None
