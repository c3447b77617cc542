"""Where the outputs of a synchronous run (StackAI) go: XCom when small, else a file the XCom points to.

Too large with no ``output_path`` is an error rather than a silent drop: the outputs are what the run
was for, and a retry with ``output_path`` set re-attaches to the same run instead of running it again.
"""

from __future__ import annotations

import json
from typing import Any

from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_flowruns.exceptions import FlowRunsConfigError


def check_output_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise FlowRunsConfigError(f"max_xcom_output_bytes must be a whole number of bytes >= 0, not {limit!r}.")
    return limit


def output_target(output_path: str | ObjectStoragePath | None, what: str = "output_path") -> ObjectStoragePath | None:
    """The rendered ``output_path`` (or the argument named ``what``), checked before anything is uploaded
    (an unknown scheme fails here)."""
    if isinstance(output_path, ObjectStoragePath):
        return output_path
    if output_path is None or not str(output_path).strip():
        return None
    try:
        return ObjectStoragePath(str(output_path).strip())
    except ValueError as exc:
        raise FlowRunsConfigError(f"{what} {output_path!r} is not a path or URI Airflow can write: {exc}") from None


def place_outputs(outputs: Any, result: dict[str, Any], target: ObjectStoragePath | None, limit: int) -> dict[str, Any]:
    """Small outputs ride in XCom under ``outputs``; larger ones go to ``target`` and XCom holds ``output_path``."""
    if outputs is None:
        return result
    encoded = json.dumps(outputs)
    size = len(encoded.encode())
    if size <= limit:
        return {**result, "outputs": outputs}
    if target is None:
        raise FlowRunsConfigError(
            f"The run's outputs are {size} bytes, over max_xcom_output_bytes={limit}, and no output_path is set. "
            "Set output_path (the run is kept: a retry re-attaches to it) or raise the limit."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(encoded)
    return {**result, "output_path": str(target)}
