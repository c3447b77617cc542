"""What every benchmark shares: a TLS emulator in its own process, its control API, and result files."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

API_KEY = "emulator-key"
RESULTS = Path(__file__).parent / "results"
EMULATOR = str(Path(sys.executable).parent / "flowruns-emulator")


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 made now, so the benchmark measures real TLS on loopback."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@dataclass
class Emulator:
    url: str
    cert: Path
    control: httpx.Client

    def stats(self) -> dict[str, Any]:
        return self.control.get("/stats").json()

    def reset(self) -> None:
        self.control.post("/reset").raise_for_status()

    def seed(self, flow_id: str, count: int, platform: str = "tableflow", **scenario: Any) -> list[str]:
        body = {"platform": platform, "flow_id": flow_id, "count": count, "scenario": scenario}
        return self.control.post("/seed", json=body, timeout=120).json()["ids"]

    def runs(self) -> list[dict[str, Any]]:
        return self.control.get("/runs", timeout=120).json()

    def connect(self, conn_id: str, conn_type: str = "tableflow", api_key: str = API_KEY, **extra: Any) -> str:
        """Point an Airflow connection (env var) at the emulator, trusting its certificate."""
        conn = {
            "conn_type": conn_type,
            "password": api_key,
            "host": self.url,
            "extra": {"verify": str(self.cert), **extra},
        }
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)
        return conn_id


@contextmanager
def emulator(*args: str) -> Iterator[Emulator]:
    """The emulator over HTTPS in its own process, so its CPU never counts as the client's."""
    with tempfile.TemporaryDirectory(prefix="flowruns-bench-") as tmp:
        cert, key = self_signed_cert(Path(tmp))
        process = subprocess.Popen(
            [EMULATOR, "--port", "0", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip().rsplit(" ", 1)[-1]
            control = httpx.Client(base_url=f"{url}/_emulator", verify=str(cert), timeout=60)
            for _ in range(200):  # the socket is bound before uvicorn serves; wait for it to answer
                try:
                    control.get("/stats").raise_for_status()
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            yield Emulator(url, cert, control)
        finally:
            process.terminate()
            process.wait(timeout=30)


def write_result(name: str, data: Any) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    lines = ["  ".join(c.rjust(widths[c]) for c in columns)]
    lines += ["  ".join(_fmt(r.get(c)).rjust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank percentile of sorted ``values`` (nan when empty)."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(pct / 100 * (len(values) - 1)))]
