"""The peak resident memory of one stretch of a process's life (Linux).

``ru_maxrss`` is a high-water mark since the process began, and imports alone peak higher than most of
what follows, so a before/after difference of it reads 0 whatever happens in between. Writing ``5`` to
``/proc/self/clear_refs`` resets the high-water mark (``VmHWM``) to the resident size of the moment, so
``VmHWM`` read afterwards is the peak of that stretch alone.
"""

from __future__ import annotations


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` figure in KiB, such as ``VmRSS`` or ``VmHWM``."""
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith(f"{field}:")).split()[1])


def reset_peak() -> int:
    """Start measuring a peak from now on; returns the resident size (KiB) it starts from."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    return status_kib("VmRSS")


def peak_kib() -> int:
    """The highest resident size (KiB) since the last :func:`reset_peak`."""
    return status_kib("VmHWM")
