"""Turn the operator's ``files`` argument into checked local paths before anything is uploaded."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow_flowruns.exceptions import FlowRunsConfigError

FileArgument = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def collect_files(files: Mapping[str, Any] | None) -> dict[str, Path | tuple[Path, ...]]:
    """Check every file up front: a run must never start with a file that cannot be read.

    A single path stays a single path; a list becomes a tuple, because some platforms name the
    parts of a multi-file field differently.
    """
    if files is None:
        return {}
    if not isinstance(files, Mapping):
        raise FlowRunsConfigError(f"files must be a dict of field name to path(s), not {type(files).__name__}.")
    collected: dict[str, Path | tuple[Path, ...]] = {}
    for key, value in files.items():
        if isinstance(value, str | os.PathLike):
            collected[key] = _checked(key, value)
        elif isinstance(value, Sequence) and value:
            collected[key] = tuple(_checked(key, item) for item in value)
        else:
            raise FlowRunsConfigError(f"files[{key!r}] must be a path or a non-empty list of paths, not {value!r}.")
    return collected


def _checked(key: str, value: Any) -> Path:
    if not isinstance(value, str | os.PathLike):
        raise FlowRunsConfigError(f"files[{key!r}] holds {value!r}, which is not a path.")
    if not str(value).strip():
        raise FlowRunsConfigError(
            f"files[{key!r}] is an empty string; if it is templated, check that the template renders a path."
        )
    path = Path(value)
    if not path.exists():
        raise FlowRunsConfigError(f"files[{key!r}]: {str(path)!r} does not exist. Check the path.")
    if path.is_dir():
        raise FlowRunsConfigError(f"files[{key!r}]: {str(path)!r} is a directory; pass the files in it as a list.")
    if path.stat().st_size == 0:
        raise FlowRunsConfigError(f"files[{key!r}]: {str(path)!r} is empty (0 bytes); nothing to process.")
    return path
