"""Which process sent which request: client ports of connections to the emulator, mapped to components.

A sampler thread reads the machine's TCP connections every half second and notes, for each connection
to the emulator, which component's process tree owns its client port (a Celery worker's task processes
count for that worker, a triggerer's trigger runner for that triggerer). The emulator notes each
request's client port; joining the two says how the components shared the platform's rate limit. A
connection opened and closed between two samples stays unattributed, and is counted as such.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import psutil

UNATTRIBUTED = "unattributed"


class PortSampler(threading.Thread):
    def __init__(self, emulator_port: int, roots: Callable[[], Mapping[int, str]], interval: float = 0.5) -> None:
        """``roots`` gives the current pid of every component, by pid."""
        super().__init__(name="port-sampler", daemon=True)
        self.emulator_port = emulator_port
        self.roots = roots
        self.interval = interval
        self.owner: dict[int, str] = {}
        """Client port to component."""
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self._component_of: dict[int, str] = {}

    def run(self) -> None:
        try:
            while not self.stopping.wait(self.interval):
                self.sample()
        except BaseException as exc:
            self.error = exc

    def sample(self) -> None:
        roots = dict(self.roots())
        for conn in psutil.net_connections(kind="tcp"):
            if conn.raddr and conn.raddr.port == self.emulator_port and conn.pid is not None:
                component = self._component(conn.pid, roots)
                if component is not None:
                    self.owner[conn.laddr.port] = component

    def _component(self, pid: int, roots: Mapping[int, str]) -> str | None:
        if pid in self._component_of:
            return self._component_of[pid]
        try:
            chain = [psutil.Process(pid), *psutil.Process(pid).parents()]
        except psutil.Error:
            return None
        component = next((roots[p.pid] for p in chain if p.pid in roots), None)
        if component is not None:
            self._component_of[pid] = component
        return component


@dataclass
class Share:
    requests: int = 0
    limited: int = 0


def shares(notes: Iterable[tuple[int, int, float]], owner: Mapping[int, str]) -> dict[str, Share]:
    """Requests and 429s per component, from the emulator's (client port, status, time) notes."""
    found: dict[str, Share] = {}
    for port, status, _ in notes:
        share = found.setdefault(owner.get(port, UNATTRIBUTED), Share())
        share.requests += 1
        share.limited += status == 429
    return found


def peak_rate(notes: Iterable[tuple[int, int, float]]) -> int:
    """The most requests sent in any one second of the run."""
    per_second = Counter(int(at) for _, _, at in notes)
    return max(per_second.values(), default=0)
