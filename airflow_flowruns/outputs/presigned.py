"""Which presigned URLs a download fetches: well-formed, on https (or the API's own scheme), to a public address.

A presigned URL comes in the platform's answer, so whoever writes that answer (a broken or impersonated
API, a proxy rewriting it) chooses where the worker connects. Fetched from the worker's own network (a
cloud metadata service on 169.254.169.254, a service on loopback, a host on 10.0.0.0/8), the answer would
be landed as an output file, where anyone reading the landing reads what only the worker could reach. So
the URL's host is resolved as the download resolves it, and every address it resolves to must be public
(``ipaddress``'s ``is_global``; an IPv4 address carried inside IPv6 is judged as that IPv4 address); the
names of cloud metadata services are refused whatever they resolve to. A private address is allowed by the
connection's extra ``allow_private_presigned_urls`` (storage on the company network), and a loopback one
while the API itself is on loopback (a local emulator or tunnel serves its own files).

A name that does not resolve here is let through: the download then fails to connect, or goes through a
proxy the environment names, which resolves it under the network's own rules. The check and the download
each resolve the name, so a name whose DNS answer changes between the two is not caught here.

Errors never carry the URL: its query string is a credential for the file, and a platform may put anything
in it. They name the host only, scrubbed of the connection's secrets.
"""

from __future__ import annotations

import ipaddress
import socket

import httpx

from airflow_flowruns.client.errors import scrub
from airflow_flowruns.exceptions import FlowRunsResponseError
from airflow_flowruns.platforms.base import Platform
from airflow_flowruns.platforms.values import is_loopback

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_HOSTS = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)
"""Names of cloud metadata services, refused even where they do not resolve to a link-local address."""
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def checked_url(platform: Platform, url_field: str, url: str, *, allow_private: bool) -> str:
    """``url`` when a download may fetch it; else the provider's error saying why, without the URL."""
    gave = f"{platform.label} gave a {url_field}"
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError, TypeError, ValueError):
        raise FlowRunsResponseError(f"{gave} that is not a valid URL; the file cannot be downloaded.") from None
    api = httpx.URL(platform.settings.base_url)
    schemes = sorted({"https", api.scheme})
    if parsed.scheme not in schemes or not host.rstrip("."):
        raise FlowRunsResponseError(
            f"{gave} that is not an {' or '.join(schemes)} URL with a host; only those are fetched, so the file "
            "cannot be downloaded."
        )
    reason = None if allow_private else _refusal(host, loopback_allowed=is_loopback(api.raw_host.decode("ascii")))
    if reason is not None:
        raise FlowRunsResponseError(
            f"{gave} on host {scrub(platform, host)!r}, which {reason}: presigned URLs are fetched only from "
            "public addresses, so an answer cannot point the worker at its own network or a cloud metadata "
            "service. Nothing was requested from it. If the platform's storage is on a private network, set "
            "the connection's extra allow_private_presigned_urls to true."
        )
    return url


def _refusal(host: str, *, loopback_allowed: bool) -> str | None:
    """Why ``host`` is not fetched from, or None when every address it resolves to may be."""
    name = host.rstrip(".").lower()
    if name in METADATA_HOSTS:
        return "is the name of a cloud metadata service"
    try:
        found = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    for *_, sockaddr in found:
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        kind = _kind(address)
        if kind is not None and not (kind == "loopback" and loopback_allowed):
            return f"resolves to {address}, a {kind} address"
    return None


def _kind(address: IPAddress) -> str | None:
    """What kind of address that is not public ``address`` is; None for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        address = _carried_ipv4(address) or address
    if address.is_global:
        return None
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified:
        return "unspecified"
    return "private or reserved"


def _carried_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (IPv4-mapped, 6to4, NAT64), which is where it leads."""
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.ipv4_mapped or address.sixtofour


__all__ = ["METADATA_HOSTS", "checked_url"]
