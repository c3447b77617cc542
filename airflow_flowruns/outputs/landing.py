"""Land one run's outputs under ``{destination}/{platform}/{flow_id}/{run_id}/``.

The folder holds ``run.json`` (the run object as the platform's read returned it), ``outputs.json`` (see
``airflow_flowruns.outputs.model``), ``files/`` (output files, streamed) and ``_MANIFEST.json``, written
last: every other file with its size and sha256, and the run's last update. A folder without a manifest
is not a landing.

Each folder name is ``folder_name`` of its id: one folder per run id
(``a/b`` and ``a_b`` land apart), and an id of letters, digits, ``-`` and ``_`` is its own folder name.

Everything is first written to a sibling staging folder ``.{run folder}.partial``, a name no run's folder
can have; only once every file is there is the previous landing set aside as ``.{run folder}.previous``,
the staged one moved in its place and its manifest written, and the previous one deleted. Any failure on
the way (a download that breaks, a full disk, a move that fails) puts the previous landing back exactly as
it was and removes the staging folder. Re-landing a run whose ``run.json`` and ``outputs.json`` are
unchanged, with every listed file present at its listed size, writes nothing; a run whose outputs a review
changed since is rewritten. Two tasks must not land the same run at the same moment.

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
from typing import IO, TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_flowruns.exceptions import FlowRunsError
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.outputs.download import FileDownloader
from airflow_flowruns.outputs.model import OutputFile, RunOutputs, folder_name, outputs_document
from airflow_flowruns.platforms import output_reader
from airflow_flowruns.platforms.base import FlowRun, RunState

if TYPE_CHECKING:
    from airflow_flowruns.review.ask import Decision

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
    """``{destination}/{platform}/{flow_id}/{run_id}``, each a ``folder_name`` (``_`` for an unknown flow)."""
    flow = folder_name(run.flow_id) if run.flow_id else "_"
    return destination / folder_name(run.platform) / flow / folder_name(run.id)


def land_run(
    hook: FlowRunsHook,
    run: FlowRun,
    destination: ObjectStoragePath,
    folder: ObjectStoragePath | None = None,
    review: Decision | None = None,
) -> Landing:
    """Land ``run`` (as just read, with its ``raw`` object) under ``destination``, in its ``run_folder``, or
    in ``folder`` (a batch lands each document's run under the document's key). ``review`` is a decision taken
    in Airflow: its edited fields replace the extracted values, which ``outputs.json`` keeps beside them."""
    if run.state not in LANDABLE and review is None:  # a reviewer's accept lands what was extracted
        raise FlowRunsError(
            f"{run.platform} run {run.id} is {run.state.value} ({run.status}): only succeeded runs, or runs "
            "waiting for review, have outputs to land. Wait for the run to finish first (FlowRunSensor)."
        )
    parsed = output_reader(run.platform).read(run.raw)
    documents = {
        "run.json": _json_bytes(run.raw),
        "outputs.json": _json_bytes(outputs_document(run, parsed, review)),
    }
    downloads = _downloads(parsed.files)
    folder = folder or run_folder(destination, run)
    landing = Landing(
        path=str(folder),
        manifest=str(folder / MANIFEST),
        outputs=len(parsed.outputs),
        files=len(downloads),
        file_references=sum(1 for file in parsed.files if file.download is None),
        bytes=0,
        written=True,
    )
    previous = _read_manifest(folder)
    if previous is not None and _unchanged(folder, previous, documents, [file.path for file in downloads]):
        log.info("Run %s is already landed at %s as it is now; nothing written.", run.id, folder)
        return _with_bytes(landing, previous, written=False)

    staging = _beside(folder, "partial")
    try:
        manifest = _manifest(run, parsed, _stage(hook, staging, documents, downloads))
        _commit(staging, folder, manifest)
    finally:
        _remove(staging)
    log.info(
        "Landed run %s at %s: %d outputs, %d files, %d file references.",
        run.id,
        folder,
        landing.outputs,
        landing.files,
        landing.file_references,
    )
    return _with_bytes(landing, manifest, written=True)


def _downloads(files: list[OutputFile]) -> list[OutputFile]:
    """The files to download, one per path: outputs that name the same file (its id and name) share it."""
    by_path: dict[str, OutputFile] = {}
    for file in files:
        if file.download is not None:
            by_path.setdefault(file.path, file)
    return list(by_path.values())


def _manifest(run: FlowRun, parsed: RunOutputs, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
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
            fetched = downloader.fetch(file.download, _opener(target), name=file.path)
            entries.append({"path": file.path, "size": fetched.size, "sha256": fetched.sha256})
    return entries


def _commit(staging: ObjectStoragePath, folder: ObjectStoragePath, manifest: dict[str, Any]) -> None:
    """Swap the staged landing in for the one in ``folder``, whose manifest goes last: a crash midway leaves a
    folder without a manifest, which the next try lands again. The previous landing is set aside first and,
    if anything fails, put back as it was."""
    previous = _beside(folder, "previous")
    _remove(previous)
    kept = folder.exists()
    if kept:
        _move(folder, previous)
    try:
        _move(staging, folder)
        (folder / MANIFEST).write_bytes(_json_bytes(manifest))
    except BaseException:
        _remove(folder)
        if kept:
            _move(previous, folder)
        raise
    _remove(previous)


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


def _beside(folder: ObjectStoragePath, use: str) -> ObjectStoragePath:
    """A working folder next to ``folder``: its name starts with a dot, which no ``folder_name`` does."""
    return folder.parent / f".{folder.name}.{use}"


def _move(source: ObjectStoragePath, target: ObjectStoragePath) -> None:
    """Move a folder to ``target``, which must not exist (locally a rename; on object storage a copy per file)."""
    source.fs.mv(source.path, target.path, recursive=True)


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
