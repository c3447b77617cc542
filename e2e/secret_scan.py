"""Look for an API key everywhere Airflow and the emulator keep text: files, every database value, and
trigger kwargs, which Airflow stores encrypted and so must be decrypted before they can be searched.

Shared by ``make e2e`` and ``tests/test_secrets.py``. A scan also counts what it read, so a report can
show it looked at something: a scan of nothing finds nothing.
"""

from __future__ import annotations

import contextlib
import json
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from e2e.stack import read_only


@dataclass
class Findings:
    secret: str
    controls: tuple[str, ...] = ()
    """Values known to be kept (a run id, say): counting them shows the scan read the right places."""
    read: Counter[str] = field(default_factory=Counter)
    """What was read, by kind: files, bytes, db values, trigger kwargs, ..."""
    hits: list[str] = field(default_factory=list)
    """Where the secret was found, one entry per occurrence."""
    control_hits: Counter[str] = field(default_factory=Counter)

    def text(self, where: str, value: str | bytes, kind: str) -> None:
        data = value.encode() if isinstance(value, str) else value
        self.read[kind] += 1
        self.read["bytes"] += len(data)
        self.hits.extend([where] * data.count(self.secret.encode()))
        for control in self.controls:
            self.control_hits[control] += data.count(control.encode())

    def summary(self) -> str:
        parts = ", ".join(f"{count:,} {kind}" for kind, count in sorted(self.read.items()))
        where = f" in {sorted(set(self.hits))}" if self.hits else ""
        return f"read {parts}; the key found {len(self.hits)} times{where}"


def scan_tree(findings: Findings, root: Path, *, skip: Iterable[Path] = ()) -> None:
    """Every regular file under ``root`` (a database file too: a deleted row may linger in free pages)."""
    skipped = {path.resolve() for path in skip}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.resolve() not in skipped:
            findings.text(str(path), path.read_bytes(), "files")


def scan_sqlite(findings: Findings, db: Path, *, fernet_key: str | None = None, tables: Iterable[str] = ()) -> None:
    """Every value of every column of every table (or of ``tables``), compressed blobs inflated.

    With ``fernet_key``, trigger kwargs are decrypted first; the connection table stays encrypted,
    since keeping the key there, encrypted, is its job.
    """
    with read_only(db) as conn:
        names = list(tables) or [
            name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        ]
        for table in names:
            cursor = conn.execute(f'SELECT * FROM "{table}"')
            columns = [d[0] for d in cursor.description]
            scan_rows(findings, f"{db.name}:{table}", columns, cursor, fernet_key=fernet_key)


def scan_rows(
    findings: Findings, where: str, columns: list[str], rows: Iterable[Iterable[Any]], *, fernet_key: str | None = None
) -> None:
    """The text and bytes values of rows read from any database (``where`` is ``db:table``).

    With ``fernet_key``, a ``trigger`` table's kwargs are also decrypted and read.
    """
    fernet = Fernet(fernet_key.encode()) if fernet_key and where.endswith(":trigger") else None
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            data = bytes(value) if isinstance(value, memoryview) else value
            if isinstance(data, str | bytes):
                place = f"{where}.{column}"
                findings.text(place, data, "db values")
                _inflated(findings, place, data)
                if fernet is not None and column == "kwargs":
                    findings.text(f"{place} (decrypted)", _decrypt(fernet, data), "trigger kwargs")


def scan_json(findings: Findings, where: str, values: Iterable[Any], kind: str) -> None:
    """Each of ``values`` as JSON: entries of a request log, say."""
    for value in values:
        findings.text(where, json.dumps(value), kind)


def _inflated(findings: Findings, where: str, value: str | bytes) -> None:
    if isinstance(value, bytes) and value[:1] == b"\x78":
        with contextlib.suppress(zlib.error):
            findings.text(f"{where} (inflated)", zlib.decompress(value), "compressed db values")


def _decrypt(fernet: Fernet, value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    if data.startswith(b"{"):
        return data  # stored unencrypted
    try:
        return fernet.decrypt(data)
    except InvalidToken:
        raise ValueError("trigger kwargs do not decrypt with the given Fernet key: the scan cannot read them") from None
