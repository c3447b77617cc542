"""The vendors' own payloads, one folder per platform (``tests/golden/<platform>/<name>.json``).

Each file is ``{"source": where it came from, "body": the payload}``; tests read the body.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def golden(platform: str, name: str) -> Any:
    document = json.loads((GOLDEN / platform / name).read_text())
    assert document["source"], f"{platform}/{name} must say where it came from"
    return document["body"]
