"""Running a piece of work that a hostile answer might hang, and the memory it held at its peak."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

HANG_GUARD = 120.0
"""Seconds after which work that should have ended at its own bound fails the test instead of freezing the suite."""


def measured(work: Callable[[], T]) -> tuple[T, int]:
    """``work()``'s result, run in a thread (a hang fails instead of freezing the suite), and the peak of
    memory traced meanwhile."""
    tracemalloc.start()
    try:
        with ThreadPoolExecutor(1) as pool:
            result = pool.submit(work).result(timeout=HANG_GUARD)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
