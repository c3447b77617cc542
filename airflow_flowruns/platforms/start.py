"""What starting a run takes: the files to upload, wherever they live, and the request the operator builds."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Literal, Protocol

TASK_KEY_FIELD = "airflow_task_key"
"""Run metadata key under which the operator stores the task key, to find its run again after a crash."""
DOCUMENT_KEY_FIELD = "airflow_document_key"
"""Run metadata key naming the document of a batch a run is for, next to ``TASK_KEY_FIELD``."""
KEY_NAME_SEPARATOR = "~"
"""Between the run key and the file's own name in a batch document's uploaded file name (see ``keyed_name``)."""


def keyed_name(key: str, name: str) -> str:
    """The name a batch document's file goes up under: ``{key}~{name}``. Where a listing item carries no
    metadata (Extend's summaries, Noxus's runs) it still carries its files' names, so the run's key is
    found without reading the run in full."""
    return f"{key}{KEY_NAME_SEPARATOR}{name}"


def key_in_name(name: str) -> str | None:
    """The run key ``keyed_name`` put in a file name, or None for a name it did not make."""
    key, separator, _ = name.partition(KEY_NAME_SEPARATOR)
    return key if separator and key.startswith("af-") else None


class FileStat(Protocol):
    @property
    def st_size(self) -> int: ...


class FilePath(Protocol):
    """A file to upload: a ``pathlib.Path``, or an ``ObjectStoragePath`` (``s3://``, ``gs://``, ``file://``, ...).

    Only what an upload and the platforms' checks use, so a file is streamed from wherever it lives.
    """

    @property
    def name(self) -> str: ...

    @property
    def suffix(self) -> str: ...

    def open(self, mode: Literal["rb"]) -> IO[bytes]: ...

    def stat(self) -> FileStat: ...


class KeyedPath:
    """A file as uploaded under a key: the same file, named ``{key}~{name}`` (see ``keyed_name``)."""

    def __init__(self, path: FilePath, key: str) -> None:
        self._path = path
        self.name = keyed_name(key, path.name)

    @property
    def suffix(self) -> str:
        return self._path.suffix

    def open(self, mode: Any) -> Any:
        return self._path.open(mode)

    def stat(self) -> FileStat:
        return self._path.stat()

    def __str__(self) -> str:
        return str(self._path)


def keyed_files(
    files: Mapping[str, FilePath | tuple[FilePath, ...]], key: str
) -> dict[str, FilePath | tuple[FilePath, ...]]:
    """``files`` as they go up named by ``key``, for a platform that finds runs by their files' names."""
    return {
        name: tuple(KeyedPath(p, key) for p in value) if isinstance(value, tuple) else KeyedPath(value, key)
        for name, value in files.items()
    }


@dataclass(frozen=True)
class UploadFile:
    """One file part of a multipart request; opened only when the request is sent, and streamed."""

    field: str
    path: FilePath
    content_type: str = "application/octet-stream"

    @property
    def filename(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class StartedBy:
    """The Airflow task that starts a run, where a platform attributes a run's cost to it (Extend's usage tags)."""

    dag_id: str
    task_id: str


@dataclass(frozen=True)
class StartRequest:
    """Everything the operator asks for when it starts a run, already checked for shape.

    ``files`` maps a platform field (TableFlow file field, Noxus input label, ...) to one file, or to a
    tuple of files when the user passed a list (some platforms name the parts differently then).
    """

    flow_id: str
    files: Mapping[str, FilePath | tuple[FilePath, ...]] = field(default_factory=dict)
    run_name: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    file_metadata: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    file_guidance: Mapping[str, str] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)
    flow_version: str | None = None
    task_key: str | None = None
    """Stable id of the Airflow task instance (dag, task, run, map index) that starts the run; the same on
    every try. Platforms store it where they can (metadata, user id, ...) to find the run again."""
    started_by: StartedBy | None = None
    """The DAG and task starting the run; None outside a task."""

    def metadata_with_task_key(self) -> dict[str, Any]:
        """The run metadata to send: the user's, plus the task key where the platform keeps metadata."""
        return {**self.metadata, TASK_KEY_FIELD: self.task_key} if self.task_key else dict(self.metadata)

    def iter_files(self) -> Iterator[tuple[str, FilePath]]:
        for key, value in self.files.items():
            for path in value if isinstance(value, tuple) else (value,):
                yield key, path
