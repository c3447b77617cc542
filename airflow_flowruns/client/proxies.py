"""The proxies the environment names, chosen as httpx chooses them, for both clients.

``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` and ``NO_PROXY`` are read exactly as httpx reads them, once
per client. The clients give httpx transports of their own (the sync one on a deadline-bounded network
backend, the async one on the shared aiohttp pool), so httpx would not mount its own proxy transports:
these mounts are the ones it would have made, on the client's kind of transport. aiohttp's ``trust_env``
is not used: it looks the proxy up again, and reads ``~/.netrc``, on every request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import httpx
from httpx._utils import URLPattern, get_environment_proxies  # what httpx itself mounts proxies for

T = TypeVar("T", bound="httpx.BaseTransport | httpx.AsyncBaseTransport")


def proxy_mounts(transport_through: Callable[[httpx.Proxy], T]) -> dict[str, T | None]:
    """A transport through each proxy the environment names, keyed by httpx's mount pattern; ``None``
    where ``NO_PROXY`` says to go direct (httpx then uses the client's own transport)."""
    return {
        pattern: None if url is None else transport_through(httpx.Proxy(url))
        for pattern, url in get_environment_proxies().items()
    }


def environment_proxy(url: httpx.URL) -> httpx.Proxy | None:
    """The proxy a request to ``url`` goes through, the one httpx's mounts would pick (``None``: direct)."""
    patterns = sorted((URLPattern(pattern), proxy) for pattern, proxy in get_environment_proxies().items())
    return next((httpx.Proxy(proxy) if proxy else None for pattern, proxy in patterns if pattern.matches(url)), None)
