"""What the emulator "extracts" from a document, and the bytes of the files its runs produce.

The emulator never reads what was uploaded: the facts of an invoice are derived from its file name, so
the same document always gives the same vendor, number and total, and tests can predict them. Output
files are generated on the fly in chunks, so a run can produce a file of any size in flat memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

VENDORS = ("Acme Supplies Ltd", "Globex Corporation", "Initech GmbH", "Umbrella Logistics", "Stark Industrial")
CHUNK_BYTES = 1024 * 1024
REVIEWED_FIELD = "total"
"""The field a human reviewer corrects in review scenarios: the extraction misread the total."""


def invoice_facts(document: str) -> dict[str, Any]:
    """Vendor, invoice number, date, total and currency of the invoice named ``document``; a name that starts
    with a vendor's first word (``acme-0042.pdf``) is that vendor's invoice."""
    digest = hashlib.sha256(document.encode()).digest()
    cents = 10_000 + int.from_bytes(digest[:4]) % 990_000
    named = [vendor for vendor in VENDORS if document.lower().startswith(vendor.split()[0].lower())]
    return {
        "vendor": named[0] if named else VENDORS[digest[4] % len(VENDORS)],
        "invoice_number": f"INV-{int.from_bytes(digest[5:8]) % 100_000:05d}",
        "invoice_date": f"2026-{1 + digest[8] % 12:02d}-{1 + digest[9] % 28:02d}",
        "total": cents / 100,
        "currency": "USD",
    }


def misread(facts: dict[str, Any]) -> dict[str, Any]:
    """What the extraction reads before review: the total with two digits swapped (or off by 9 when equal)."""
    text = f"{facts[REVIEWED_FIELD]:.2f}"
    swapped = text[:-5] + text[-4] + text[-5] + text[-3:] if len(text) >= 5 else text
    value = float(swapped) if swapped != text else round(facts[REVIEWED_FIELD] + 9, 2)
    return {**facts, REVIEWED_FIELD: value}


@dataclass(frozen=True)
class GeneratedFile:
    """An output file the emulator serves: its bytes are a function of its id and size."""

    id: str
    name: str
    size: int
    content_type: str = "application/pdf"

    def chunks(self) -> Iterator[bytes]:
        block = (hashlib.sha256(self.id.encode()).hexdigest().encode() + b"\n") * (CHUNK_BYTES // 65 + 1)
        header = b"%PDF-1.4\n" if self.content_type == "application/pdf" else b""
        left = self.size
        first = True
        while left > 0:
            chunk = (header + block) if first else block
            first = False
            piece = chunk[: min(left, CHUNK_BYTES)]
            left -= len(piece)
            yield piece
