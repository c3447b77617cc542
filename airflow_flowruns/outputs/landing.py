"""Land one run's outputs under ``{destination}/{platform}/{flow_id}/{run_id}/``.

The folder holds ``run.json`` (the run object as the platform's read returned it), ``outputs.json`` (see
:mod:`airflow_flowruns.outputs.model`), ``files/`` (output files, streamed) and ``_MANIFEST.json``, written
last: every other file with its size and sha256, and the run's last update. A folder without a manifest
is not a landing.

Everything is first written to a sibling staging folder ``{run_id}.partial``; only once every file is
there is the old manifest removed, the files moved into place, stale files deleted and the new manifest
written. A failure while staging (a download that breaks, a full disk) leaves the previous landing as it
was; the next try replaces the staging folder. Re-landing a run whose ``run.json`` and ``outputs.json``
are unchanged, with every listed file present at its listed size, writes nothing; a run whose outputs a
review changed since is rewritten. Two tasks must not land the same run at the same moment.

Output values are never logged: they are often personal data. Logs and the result hold paths, counts
and byte sizes only.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import IO, Any

from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_flowruns.exceptions import FlowRunsError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.outputs.download import FileDownloader
from airflow_flowruns.outputs.model import OutputFile, outputs_document, safe_segment
from airflow_flowruns.platforms import output_reader
from airflow_flowruns.platforms.base import FlowRun, RunState

log = logging.getLogger(__name__)

MANIFEST = "_MANIFEST.json"
MANIFEST_FORMAT = "airflow-flowruns/manifest/1"
LANDABLE = frozenset({RunState.SUCCEEDED, RunState.NEEDS_REVIEW})


@dataclass(frozen=True)
class Landing:
    """What a landing did, as the task returns it in XCom: paths, counts and bytes, never output values."""

    path: str
    manifest: str
    outputs: int
    files: int
    file_references: int
    bytes: int
    written: bool
    """False when the run was already landed as it is now, and nothing was written."""

    def to_xcom(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "manifest": self.manifest,
            "outputs": self.outputs,
            "files": self.files,
            "file_references": self.file_references,
            "bytes": self.bytes,
            "written": self.written,
        }


def run_folder(destination: ObjectStoragePath, run: FlowRun) -> ObjectStoragePath:
    return destination / safe_segment(run.platform) / safe_segment(run.flow_id or "_") / safe_segment(run.id)


def land_run(hook: FlowRunsHook, run: FlowRun, destination: ObjectStoragePath) -> Landing:
    """Land ``run`` (as just read, with its ``raw`` object) under ``destination``."""
    if run.state not in LANDABLE:
        raise FlowRunsError(
            f"{run.platform} run {run.id} is {run.state.value} ({run.status}): only succeeded runs, or runs "
            "waiting for review, have outputs to land. Wait for the run to finish first (FlowRunSensor)."
        )
    parsed = output_reader(run.platform).read(run.raw)
    documents = {
        "run.json": _json_bytes(run.raw),
        "outputs.json": _json_bytes(outputs_document(run, parsed)),
    }
    downloads = [file for file in parsed.files if file.download is not None]
    folder = run_folder(destination, run)
    landing = Landing(
        path=str(folder),
        manifest=str(folder / MANIFEST),
        outputs=len(parsed.outputs),
        files=len(downloads),
        file_references=len(parsed.files) - len(downloads),
        bytes=0,
        written=True,
    )
    previous = _read_manifest(folder)
    if previous is not None and _unchanged(folder, previous, documents, [file.path for file in downloads]):
        log.info("Run %s is already landed at %s as it is now; nothing written.", run.id, folder)
        return _with_bytes(landing, previous, written=False)

    staging = folder.parent / f"{folder.name}.partial"
    entries = _stage(hook, staging, documents, downloads)
    manifest = {
        "format": MANIFEST_FORMAT,
        "platform": run.platform,
        "flow_id": run.flow_id,
        "run_id": run.id,
        "status": run.status,
        "state": run.state.value,
        "run_updated_at": parsed.updated_at,
        "landed_at": datetime.now(UTC).isoformat(),
        "files": entries,
    }
    _commit(staging, folder, [entry["path"] for entry in entries], manifest)
    log.info(
        "Landed run %s at %s: %d outputs, %d files, %d file references.",
        run.id,
        folder,
        landing.outputs,
        landing.files,
        landing.file_references,
    )
    return _with_bytes(landing, manifest, written=True)


def _stage(
    hook: FlowRunsHook, staging: ObjectStoragePath, documents: dict[str, bytes], downloads: list[OutputFile]
) -> list[dict[str, Any]]:
    """Write the documents and download the files into a fresh ``staging`` folder; the manifest's entries
    for them, each with its size and sha256."""
    _remove(staging)
    staging.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    for name, data in documents.items():
        (staging / name).write_bytes(data)
        entries.append({"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    if downloads:  # the hook's client is only needed, and made, for files
        downloader = FileDownloader(hook)
        for file in downloads:
            assert file.download is not None
            target = staging / file.path
            target.parent.mkdir(parents=True, exist_ok=True)
            fetched = downloader.fetch(file.download, _opener(target))
            entries.append({"path": file.path, "size": fetched.size, "sha256": fetched.sha256})
    return entries


def _commit(staging: ObjectStoragePath, folder: ObjectStoragePath, paths: list[str], manifest: dict[str, Any]) -> None:
    """Replace the landing in ``folder`` by the staged one; the manifest goes last, so a crash here
    leaves a folder without a manifest, which the next try lands again."""
    (folder / MANIFEST).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        (staging / path).move(target)
    keep = set(paths)
    for stale in _files_under(folder):
        if stale not in keep:
            (folder / stale).unlink(missing_ok=True)
    (folder / MANIFEST).write_bytes(_json_bytes(manifest))
    _remove(staging)


def _unchanged(
    folder: ObjectStoragePath, manifest: dict[str, Any], documents: dict[str, bytes], files: list[str]
) -> bool:
    listed = {entry.get("path"): entry for entry in manifest.get("files", []) if isinstance(entry, dict)}
    for name, data in documents.items():
        if listed.get(name, {}).get("sha256") != hashlib.sha256(data).hexdigest():
            return False
    if set(listed) != set(documents) | set(files):
        return False
    for path, entry in listed.items():
        target = folder / str(path)
        if not target.exists() or target.stat().st_size != entry.get("size"):
            return False
    return True


def _read_manifest(folder: ObjectStoragePath) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_bytes())
    except ValueError:
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT else None


def _with_bytes(landing: Landing, manifest: dict[str, Any], *, written: bool) -> Landing:
    total = sum(int(entry.get("size") or 0) for entry in manifest.get("files", []) if isinstance(entry, dict))
    return replace(landing, bytes=total, written=written)


def _files_under(folder: ObjectStoragePath) -> list[str]:
    """Every file below ``folder``, as paths relative to it."""
    root = folder.path.rstrip("/")
    return [found[len(root) + 1 :] for found in folder.fs.find(root)]


def _remove(path: ObjectStoragePath) -> None:
    if path.exists():
        path.fs.rm(path.path, recursive=True)


def _opener(target: ObjectStoragePath) -> Callable[[], IO[bytes]]:
    def open_target() -> IO[bytes]:
        opened: IO[bytes] = target.open("wb")
        return opened

    return open_target


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=2, ensure_ascii=False).encode()


__all__ = ["MANIFEST", "Landing", "land_run", "run_folder"]
