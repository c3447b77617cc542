"""A StatsD listener on loopback for the end-to-end runs: what every Airflow process sent, as it arrived.

StatsD is UDP: a lost packet is lost without a trace, which is why the e2e runs count what arrived rather than
trust what was sent (custom metrics of some processes have been silently lost, apache/airflow#69172).
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

from e2e.harness import Outcome


class StatsdListener:
    """Binds a UDP port on 127.0.0.1 and adds up every metric line it receives, by name and kind."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.port: int = self._socket.getsockname()[1]
        self.counters: dict[str, float] = {}
        self.kinds: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="statsd-listener", daemon=True)

    def environment(self, prefix: str = "airflow") -> Mapping[str, str]:
        """The Airflow settings that send a deployment's metrics here."""
        return {
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(self.port),
            "AIRFLOW__METRICS__STATSD_PREFIX": prefix,
        }

    def __enter__(self) -> StatsdListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                packet = self._socket.recv(65535)
            except TimeoutError:
                continue
            for line in packet.decode("utf-8", "replace").splitlines():
                self._add(line)

    def _add(self, line: str) -> None:
        name, _, rest = line.partition(":")
        value, _, kind = rest.partition("|")
        kind = kind.split("|")[0]
        try:
            number = float(value.lstrip("+"))
        except ValueError:
            return
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + (number if kind in ("c", "g") else 1)
            self.kinds[name] = kind

    def received(self, prefix: str) -> dict[str, float]:
        """Every metric whose name starts with ``prefix``: a counter's total, a timer's number of samples."""
        with self._lock:
            return {name: total for name, total in self.counters.items() if name.startswith(prefix)}


def check_metrics(
    out: Outcome, listener: StatsdListener, runs: list[dict[str, Any]], conn_ids: Mapping[str, str]
) -> None:
    """What the worker and the triggerer sent arrived: each platform's ``runs_started`` (sent only by the task
    that starts the run, in a worker) adds up to the runs the emulator holds, and ``runs_settled`` (sent, for a
    run that ends while its task is deferred, only by the trigger that sees it end, in the triggerer) and
    ``requests.2xx`` (both) arrived for every platform. A batch task counts its documents' ended runs in its
    worker when it reports; the review DAG's batch hands every document to review before any run ends, so it
    counts none, and what arrives is still the triggerer's."""
    started = Counter(run["platform"] for run in runs)
    for platform, conn_id in conn_ids.items():
        prefix = f"airflow.flowruns.{platform}.{conn_id}."
        got = listener.received(prefix)
        settled = sum(total for name, total in got.items() if name.startswith(prefix + "runs_settled."))
        out.figure(
            f"StatsD from {platform}: runs_started {got.get(prefix + 'runs_started', 0):g} of {started[platform]} "
            f"runs, runs_settled {settled:g}, requests.2xx {got.get(prefix + 'requests.2xx', 0):g}"
        )
        out.require(
            got.get(prefix + "runs_started") == started[platform],
            f"{platform}: runs_started from the workers did not add up to the {started[platform]} runs started",
        )
        out.require(settled > 0, f"{platform}: no runs_settled arrived from the triggerer")
        out.require(got.get(prefix + "requests.2xx", 0) > 0, f"{platform}: no requests.2xx arrived")
