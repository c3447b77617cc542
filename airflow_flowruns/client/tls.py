"""What a failed connection says about the base URL's scheme and the server's certificate: the mistakes no retry
mends, told apart from a network that failed for now.

Plain HTTP behind an ``https://`` host, TLS behind an ``http://`` host and a certificate this machine does not
accept fail every attempt the same way. A certificate refused, or a handshake answered with bytes that are not TLS,
is told by the TLS library's own error. The rest (a plain HTTP server that waits for a request head and never
answers the TLS handshake; a TLS server that hangs up on a plain request) only asking the server the other way
round tells: whether it answers plain HTTP, whether it speaks TLS. Those questions go straight to the host, so they
are asked only when no proxy stands in between.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpcore
import httpx

from airflow_flowruns.client.proxies import environment_proxy
from airflow_flowruns.exceptions import FlowRunsTlsError

UNKNOWN_AUTHORITY = frozenset({2, 18, 19, 20, 21})
"""OpenSSL's verify codes for a chain ending at a certificate authority this machine does not trust (unable to
get the issuer, self-signed, self-signed in the chain, no local issuer, cannot verify the leaf)."""
HOSTNAME_MISMATCH, EXPIRED = 62, 10
NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL"})
"""The TLS library's reasons for a handshake answered with bytes that are not TLS (a plain HTTP status line)."""
SECOND_QUESTION_SECONDS = 5.0
TLS_PORT_REFUSING_PLAIN_HTTP = 400
"""What nginx, Apache, Go and the cloud load balancers answer a plain HTTP request sent to their TLS port with:
such a server speaks TLS, so this status never counts as a plain HTTP server's answer."""


@dataclass(frozen=True)
class SchemeMistake:
    """Why no attempt on the base URL can work as the connection says it, and the fix."""

    detail: str
    fix: str

    def error(self, platform: str, call: str) -> FlowRunsTlsError:
        return FlowRunsTlsError(platform=platform, call=call, detail=self.detail, fix=self.fix)


class SchemeCheck:
    """Judges the failures of one client's requests to its base URL.

    A certificate refused or a handshake that is not TLS is judged on the spot. Any other failure may still be a
    server speaking the other scheme, so the server is asked; once it has answered as its URL says it should, it
    is not asked again: an unreachable host costs one question in the client's life, not one per attempt.
    """

    def __init__(self, base_url: str, timeout: float) -> None:
        self.url = httpx.URL(base_url)
        self.where = address(self.url)
        self._timeout = min(timeout, SECOND_QUESTION_SECONDS)
        self._cleared = environment_proxy(self.url) is not None

    def asks(self, exc: BaseException) -> bool:
        """Whether judging ``exc`` asks the server (blocks up to a few seconds: off the event loop)."""
        if self._cleared or certificate_error(exc) is not None:
            return False
        if not isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.ProtocolError):
            return False
        return self.url.scheme == "https" or not timed_out(exc)

    def mistake(self, exc: BaseException) -> SchemeMistake | None:
        """The mistake ``exc`` shows, or None where it may be the network failing for now."""
        refused = certificate_error(exc)
        if refused is not None:
            return certificate_refused(self.where, refused)
        if self.asks(exc):
            asked = self._asked()
            if asked is not None:
                return asked
            self._cleared = True
        reason = getattr(tls_error(exc), "reason", None)
        if self.url.scheme == "https" and reason in NOT_TLS:
            return plain_http_behind_https(self.where, f"does not answer in TLS ({reason}),")
        return None

    @contextmanager
    def judging(self, platform: str, call: str) -> Iterator[None]:
        """A request whose failure, where it is a mistake, is the provider's own error naming it and the fix
        (blocking: the async client judges in a thread, see ``asks``)."""
        try:
            yield
        except httpx.TransportError as exc:
            mistake = self.mistake(exc)
            if mistake is None:
                raise
            raise mistake.error(platform, call) from exc

    def _asked(self) -> SchemeMistake | None:
        if self.url.scheme == "https" and speaks_plain_http(self.url, self._timeout):
            return plain_http_behind_https(self.where, "answers plain HTTP, not TLS,")
        if self.url.scheme == "http" and speaks_tls(self.url, self._timeout):
            return tls_behind_http(self.where)
        return None


def plain_http_behind_https(where: str, said: str) -> SchemeMistake:
    return SchemeMistake(
        f"{where} {said} and the host says https://",
        "the server speaks plain HTTP: use http:// only for a test server on a trusted network, since the key then "
        "crosses it in clear; otherwise put the API's TLS address in the host (usually port 443).",
    )


def tls_behind_http(where: str) -> SchemeMistake:
    return SchemeMistake(f"{where} speaks TLS, and the host says http://", "the server speaks TLS: write https://.")


def certificate_refused(where: str, error: ssl.SSLCertVerificationError) -> SchemeMistake:
    said = error.verify_message or str(error)
    if error.verify_code in UNKNOWN_AUTHORITY:
        return SchemeMistake(
            f"{where}'s certificate is signed by a certificate authority this machine does not trust ({said})",
            "set the verify extra to your CA bundle (a PEM file holding that authority's certificate, readable on "
            "every worker and triggerer); verify=false would let anyone on the network path read the key.",
        )
    if error.verify_code == HOSTNAME_MISMATCH:
        return SchemeMistake(
            f"{where}'s certificate is for another name ({said})",
            "use the host name the certificate was issued for.",
        )
    fix = "renew the server's certificate." if error.verify_code == EXPIRED else "check the server's certificate chain."
    return SchemeMistake(f"{where}'s certificate was refused ({said})", fix)


def speaks_plain_http(url: httpx.URL, timeout: float = SECOND_QUESTION_SECONDS) -> bool:
    """Whether the server at the URL's host and port answers an HTTP request sent without TLS, as a plain HTTP
    server does: not with the 400 a TLS server gives a plain request."""
    try:
        with socket.create_connection((url.host, _port(url)), timeout=timeout) as sock:
            sock.sendall(f"HEAD / HTTP/1.0\r\nHost: {url.host}\r\n\r\n".encode())
            head = b""
            while b"\r\n" not in head and len(head) < 1024 and (read := sock.recv(1024)):
                head += read
    except OSError:
        return False
    version, _, rest = head.partition(b" ")
    return version.startswith(b"HTTP/") and rest[:3] != str(TLS_PORT_REFUSING_PLAIN_HTTP).encode()


def speaks_tls(url: httpx.URL, timeout: float = SECOND_QUESTION_SECONDS) -> bool:
    """Whether the server at the URL's host and port completes a TLS handshake (its certificate unchecked: only
    whether it speaks TLS at all is asked, and nothing is sent)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with (
            socket.create_connection((url.host, _port(url)), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=url.host),
        ):
            return True
    except OSError:
        return False


def address(url: httpx.URL) -> str:
    """The host and port a URL reaches, as messages name them."""
    return f"{url.host}:{_port(url)}"


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def tls_error(exc: BaseException) -> ssl.SSLError | None:
    """The TLS library's error behind an HTTP client's error, however deep httpx, httpcore or aiohttp wrapped it
    (the deepest: aiohttp's certificate error is an ``SSLError`` too, without the library's verify code)."""
    return next((seen for seen in reversed(_chain(exc)) if isinstance(seen, ssl.SSLError)), None)


def certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    error = tls_error(exc)
    return error if isinstance(error, ssl.SSLCertVerificationError) else None


def timed_out(exc: BaseException) -> bool:
    """Whether the request ran out of time, whatever the client calls it: the async transport reports a server
    that hung up as a ``ConnectTimeout``, so what it wraps tells."""
    chain = _chain(exc)
    alone = len(chain) == 1 and isinstance(exc, httpx.TimeoutException)
    return alone or any(isinstance(seen, TimeoutError | httpcore.TimeoutException) for seen in chain)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen
