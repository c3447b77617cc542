"""Turn the operator's ``files`` argument into checked files before anything is uploaded.

A file is a local path, an ``ObjectStoragePath``, or a URI that Airflow's object storage opens
(``file://``, ``s3://``, ``gs://``, ... with the provider for that scheme installed). Nothing is read
here: uploads stream each file from where it lives.

A glob (``/data/in/*.pdf``, ``s3://bucket/in/**/*.pdf``) or a string naming a folder with a trailing
slash (``/data/in/``, ``s3://bucket/in/``) expands to a multi-file field, sorted by path; a folder
expands to the files directly in it. As in a shell, hidden files (``.name``) are left out unless the
pattern's last part starts with a dot. A folder without the trailing slash is refused, so a templated
file name that renders empty never uploads a whole folder. A file a folder or glob finds through a
symbolic link that leads out of that folder is refused unless ``follow_symlinks`` is set, so a link
planted in an input folder cannot send ``/etc/passwd`` or another tenant's files to the platform.

Uploads open each file only while its part is being sent (``OpenWhileRead``), so a run with
thousands of files never holds thousands of file descriptors.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeAlias

from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.platforms.start import FilePath

PathArgument: TypeAlias = str | os.PathLike[str] | ObjectStoragePath
StoredPath: TypeAlias = Path | ObjectStoragePath
FileArgument: TypeAlias = PathArgument | Sequence[PathArgument]

_GLOB = re.compile(r"[*?\[]")


def collect_files(
    files: Mapping[str, Any] | None, *, check: bool = True, follow_symlinks: bool = False
) -> dict[str, FilePath | tuple[FilePath, ...]]:
    """Resolve and, with ``check``, verify every file up front: a run must never start with one that cannot be read.

    A single path stays a single path; a list, a glob or a folder becomes a tuple, because some platforms
    name the parts of a multi-file field differently. ``check=False`` only resolves the names, for lineage;
    ``follow_symlinks`` lets a folder or glob send files whose links lead out of it.
    """
    if files is None:
        return {}
    if not isinstance(files, Mapping):
        raise FlowRunsConfigError(f"files must be a dict of field name to path(s), not {type(files).__name__}.")
    collected: dict[str, FilePath | tuple[FilePath, ...]] = {}
    for key, value in files.items():
        if isinstance(value, str | os.PathLike | ObjectStoragePath):
            collected[key] = _resolve(key, value, check, follow_symlinks)
        elif isinstance(value, Sequence) and value:
            collected[key] = tuple(_flatten(_resolve(key, item, check, follow_symlinks) for item in value))
        else:
            raise FlowRunsConfigError(f"files[{key!r}] must be a path or a non-empty list of paths, not {value!r}.")
    return collected


def archive_files(archive: PathArgument, *, follow_symlinks: bool = False) -> tuple[StoredPath, list[FilePath]]:
    """The files of an archive, each one document of a batch, and the folder their keys are relative to.

    ``archive`` is a glob (matches below the folder above its first wildcard) or a folder written with a
    trailing ``/`` (every file below it, at any depth, hidden ones left out). Each file is checked as ``files``
    checks it, so an empty or missing one fails before any run starts.
    """
    what = "documents"
    text = str(archive).strip()
    if not text:
        raise FlowRunsConfigError("documents is an empty string; if it is templated, check that it renders a path.")
    try:
        path = _as_path(archive, text)
        if _GLOB.search(text) and not path.exists():
            root, matches = _glob(what, path)
        elif text.endswith("/") or (isinstance(archive, ObjectStoragePath) and path.is_dir()):
            if not path.is_dir():
                raise FlowRunsConfigError(f"documents {text!r} ends with '/' but is not a folder. Check the path.")
            root, matches = path, [m for m in path.rglob("*") if m.is_file() and not _hidden_below(m, path)]
        else:
            raise FlowRunsConfigError(
                f"documents {text!r} is neither a folder written with a trailing '/' nor a glob: write "
                f"{text.rstrip('/')}/ for every file below it, or a pattern such as {text.rstrip('/')}/**/*.pdf."
            )
        return root, list(_expanded(what, text, _inside(what, root, matches, follow_symlinks), True))
    except (ValueError, ImportError) as exc:
        raise FlowRunsConfigError(
            f"documents: cannot open {text!r}: {exc}. A URI needs the Airflow provider for its scheme."
        ) from None


def _hidden_below(path: StoredPath, root: StoredPath) -> bool:
    return any(part.startswith(".") for part in relative_parts(path, root))


def relative_parts(path: FilePath | StoredPath, root: StoredPath) -> list[str]:
    """``path``'s parts below ``root``, for either kind of path (``ObjectStoragePath`` has no ``relative_to``
    across buckets, and strings compare the same on both)."""
    inner, outer = str(path).rstrip("/"), str(root).rstrip("/")
    if not inner.startswith(outer + "/"):
        raise FlowRunsConfigError(f"{inner!r} is not below {outer!r}.")
    return inner[len(outer) + 1 :].split("/")


def file_uri(path: FilePath) -> str:
    """The file's URI as Airflow's object storage names it: ``file:///...`` for a local path."""
    if isinstance(path, Path):
        return path.absolute().as_uri()
    return str(path)


def _flatten(items: Iterable[FilePath | tuple[FilePath, ...]]) -> Iterable[FilePath]:
    for item in items:
        yield from item if isinstance(item, tuple) else (item,)


def _resolve(key: str, value: Any, check: bool, follow_symlinks: bool) -> FilePath | tuple[FilePath, ...]:
    if not isinstance(value, str | os.PathLike | ObjectStoragePath):
        raise FlowRunsConfigError(f"files[{key!r}] holds {value!r}, which is not a path.")
    text = str(value).strip()
    if not text:
        raise FlowRunsConfigError(
            f"files[{key!r}] is an empty string; if it is templated, check that the template renders a path."
        )
    try:
        path = _as_path(value, text)
        if _GLOB.search(text) and not path.exists():  # a real name with [ ] in it is taken literally
            base, matches = _glob(key, path)
            return _expanded(key, text, _inside(key, base, matches, follow_symlinks), check)
        if isinstance(value, str) and text.endswith("/"):
            return _expanded(key, text, _inside(key, path, _folder(key, path, text), follow_symlinks), check)
        return _checked(key, path) if check else path
    except (ValueError, ImportError) as exc:  # no filesystem for the scheme, or its library is missing
        raise FlowRunsConfigError(
            f"files[{key!r}]: cannot open {text!r}: {exc}. A URI needs the Airflow provider for its scheme "
            "(e.g. apache-airflow-providers-amazon for s3://, apache-airflow-providers-google for gs://)."
        ) from None


def _as_path(value: PathArgument, text: str) -> StoredPath:
    if isinstance(value, ObjectStoragePath):
        return value
    if "://" in text:
        return ObjectStoragePath(text)
    return Path(text)


def _glob(key: str, path: StoredPath) -> tuple[StoredPath, list[StoredPath]]:
    """Glob from the deepest folder above the first part that has a wildcard; that folder and the matches."""
    base, parts = path, []
    while _GLOB.search(str(base)):
        if base.parent == base:
            raise FlowRunsConfigError(f"files[{key!r}]: {str(path)!r} has a wildcard where no folder can be listed.")
        parts.append(base.name)
        base = base.parent
    hidden_wanted = parts[0].startswith(".")
    matches = [m for m in base.glob("/".join(reversed(parts))) if (hidden_wanted or not _hidden(m)) and m.is_file()]
    return base, matches


def _inside(key: str, folder: StoredPath, matches: list[StoredPath], follow_symlinks: bool) -> list[StoredPath]:
    """Refuse a local match whose real path, symbolic links followed, is outside the folder it was found in."""
    if follow_symlinks or not isinstance(folder, Path):
        return matches
    root = folder.resolve()
    for match in matches:
        assert isinstance(match, Path)
        if not match.resolve().is_relative_to(root):
            raise FlowRunsConfigError(
                f"files[{key!r}]: {str(match)!r} is a symbolic link (or lies under one) leading out of "
                f"{str(folder)!r}, to {str(match.resolve())!r}. Remove the link, or set follow_symlinks=True to send "
                "files that links lead to."
            )
    return matches


def _folder(key: str, path: StoredPath, text: str) -> list[StoredPath]:
    if not path.is_dir():
        raise FlowRunsConfigError(
            f"files[{key!r}]: {text!r} ends with '/' but is not a folder. Check the path, or drop the '/' for one file."
        )
    return [child for child in path.iterdir() if not _hidden(child) and child.is_file()]


def _hidden(path: StoredPath) -> bool:
    return path.name.startswith(".")


def _expanded(key: str, pattern: str, matches: list[StoredPath], check: bool) -> tuple[FilePath, ...]:
    if not matches and check:
        raise FlowRunsConfigError(
            f"files[{key!r}]: {pattern!r} matched no files. Check the folder or pattern, or that the files arrived."
        )
    ordered = sorted(matches, key=str)
    return tuple(_checked(key, match) for match in ordered) if check else tuple(ordered)


def _checked(key: str, path: StoredPath) -> FilePath:
    shown = str(path)
    if not path.exists():
        raise FlowRunsConfigError(f"files[{key!r}]: {shown!r} does not exist. Check the path.")
    if path.is_dir():
        raise FlowRunsConfigError(
            f"files[{key!r}]: {shown!r} is a directory. To send every file in it, end the path with '/' "
            f"({shown.rstrip('/')}/) or use a glob such as {shown.rstrip('/')}/*.pdf; or pass the files as a list."
        )
    if path.stat().st_size == 0:
        raise FlowRunsConfigError(f"files[{key!r}]: {shown!r} is empty (0 bytes); nothing to process.")
    return path


class OpenWhileRead(io.RawIOBase):
    """A file part for httpx's multipart upload that holds its file open only while it is being read.

    httpx asks each part for its length (``seek``/``tell``, answered from ``stat()`` without opening) when
    the request is built, and reads the parts one after the other when it is sent: the file is opened on
    the first read and closed at its end, or when the upload is sent again (``seek(0)``) or given up.
    """

    def __init__(self, path: FilePath) -> None:
        super().__init__()
        self._path = path
        self._file: IO[bytes] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._file.tell() if self._file is not None else 0

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END and offset == 0:
            return self._path.stat().st_size
        if whence == io.SEEK_SET and offset == 0:
            self._release()
            return 0
        raise io.UnsupportedOperation("an upload part is read from its start to its end")

    def read(self, size: int = -1) -> bytes:
        if self._file is None:
            self._file = self._path.open("rb")
        data = self._file.read(size)
        if not data:
            self._release()
        return data

    def _release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        self._release()
        super().close()
