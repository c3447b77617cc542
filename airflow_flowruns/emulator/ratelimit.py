"""A request-rate limit per API key (a token bucket), answering 429 with Retry-After beyond it.

Like Extend's plans (5 requests/s on the smallest) it counts every endpoint. Keys are told apart by a
hash of the credential header, so no key is kept in memory or logs in clear.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time

from fastapi import Request


class TokenBuckets:
    def __init__(self, per_second: float | None = None) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}
        self.limited = 0
        self.set_rate(per_second)

    def set_rate(self, per_second: float | None) -> None:
        with self._lock:
            self.per_second = per_second
            self._buckets.clear()

    def retry_after(self, request: Request) -> float | None:
        """None when the request may go; else seconds until the key has a token again."""
        if not self.per_second:
            return None
        credential = request.headers.get("authorization") or request.headers.get("x-api-key") or ""
        key = hashlib.sha256(credential.encode()).hexdigest()
        capacity = max(1.0, self.per_second)
        with self._lock:
            tokens, stamp = self._buckets.get(key, (capacity, time.monotonic()))
            now = time.monotonic()
            tokens = min(capacity, tokens + (now - stamp) * self.per_second)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return None
            self._buckets[key] = (tokens, now)
            self.limited += 1
            return (1.0 - tokens) / self.per_second


def retry_after_header(seconds: float) -> str:
    """Whole seconds, as HTTP says; at least 1."""
    return str(max(1, math.ceil(seconds)))
