"""A batch's documents and their keys: what each run is for, named the same on every try.

A document's **key** is what it is called in the manifest and in its landing folder: for a folder or a glob,
the file's path below that folder (``2024/03/invoice-001.pdf``); for a list, the item's ``key``, or without one
its files' paths. The key is made of names only, never of content: a file changed between two tries keeps its
key, so its run, alive or succeeded, is followed and the new content is not sent; a renamed file is a new
document.

A document's **run key**, stored on its run, is ``{batch key}.{tag}``: the batch key names the task (DAG, task,
DAG run; not the map index, so shards of one archive share it) and the tag is 16 hex digits of the
document key's SHA-256. The tag also decides the document's shard, so every document falls in exactly one
shard whatever the order the archive is listed in.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.files import archive_files, collect_files, relative_parts
from airflow_flowruns.platforms.start import FilePath, keyed_files
from airflow_flowruns.platforms.values import repeated, require_json_object

TAG_LENGTH = 16


@dataclass(frozen=True)
class BatchKeys:
    """The keys of one shard of a batch: which runs are its own, and which documents it starts."""

    batch_key: str
    shard: int = 0
    shard_count: int = 1

    def __post_init__(self) -> None:
        count, shard = self.shard_count, self.shard
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise FlowRunsConfigError(f"shard_count must be a whole number >= 1, not {count!r}.")
        if isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < count:
            raise FlowRunsConfigError(
                f"shard must be a whole number from 0 to shard_count - 1 ({count - 1}), not {shard!r}: map the "
                f"task with .partial(shard_count={count}).expand(shard=list(range({count})))."
            )

    def run_key(self, document_key: str) -> str:
        return f"{self.batch_key}.{_tag(document_key)}"

    def owns_document(self, document_key: str) -> bool:
        return int(_tag(document_key), 16) % self.shard_count == self.shard

    def owns_run_key(self, run_key: str | None) -> bool:
        """A run of this shard: its key is this batch's, and its tag falls in this shard."""
        if not run_key or not run_key.startswith(self.batch_key + "."):
            return False
        tag = run_key[len(self.batch_key) + 1 :]
        return len(tag) == TAG_LENGTH and int(tag, 16) % self.shard_count == self.shard


def _tag(document_key: str) -> str:
    return hashlib.sha256(document_key.encode()).hexdigest()[:TAG_LENGTH]


@dataclass(frozen=True)
class Document:
    """One document: its key, its files by field, and the metadata only its run carries."""

    key: str
    files: Mapping[str, FilePath | tuple[FilePath, ...]]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def keyed_files(self, run_key: str) -> dict[str, FilePath | tuple[FilePath, ...]]:
        """The files as a batch uploads them, named by run key where the platform finds runs by file name."""
        return keyed_files(self.files, run_key)

    def only_file(self) -> FilePath:
        (value,) = self.files.values()
        if isinstance(value, tuple):
            raise FlowRunsConfigError(f"Document {self.key!r} has several files; a batch start takes one per document.")
        return value


def collect_documents(
    documents: Any, file_field: str | None, keys: BatchKeys, *, follow_symlinks: bool = False
) -> list[Document]:
    """This shard's documents, sorted by key, every file checked before any run starts."""
    if isinstance(documents, str | os.PathLike | ObjectStoragePath):
        found = list(_archive(documents, file_field, follow_symlinks))
    elif isinstance(documents, Sequence) and not isinstance(documents, bytes):
        found = [_listed(item, index, follow_symlinks) for index, item in enumerate(documents)]
    else:
        raise FlowRunsConfigError(
            "documents must be a folder (ending in '/'), a glob, or a list of {'files': {...}, 'key': ..., "
            f"'metadata': {{...}}}} items, not {type(documents).__name__}."
        )
    if not found:
        raise FlowRunsConfigError("documents holds no document: check the folder, pattern or upstream list.")
    repeated_keys = repeated(doc.key for doc in found)
    if repeated_keys:
        raise FlowRunsConfigError(
            f"Document keys must be unique, and {', '.join(map(repr, repeated_keys[:5]))} appear more than once: "
            "give each list item its own 'key'."
        )
    return sorted((doc for doc in found if keys.owns_document(doc.key)), key=lambda doc: doc.key)


def _archive(archive: Any, file_field: str | None, follow_symlinks: bool) -> Iterator[Document]:
    if not file_field:
        raise FlowRunsConfigError("A folder or glob of documents needs the flow's file field: set file_field=.")
    root, paths = archive_files(archive, follow_symlinks=follow_symlinks)
    for path in paths:
        yield Document("/".join(relative_parts(path, root)), {file_field: path})


def _listed(item: Any, index: int, follow_symlinks: bool) -> Document:
    if not isinstance(item, Mapping):
        raise FlowRunsConfigError(f"documents[{index}] must be a mapping such as {{'files': {{...}}}}, not {item!r}.")
    files_argument = item.get("files", item)
    files = collect_files(files_argument, follow_symlinks=follow_symlinks)
    key = item.get("key") if "files" in item else None
    if key is not None and (not isinstance(key, str) or not key.strip()):
        raise FlowRunsConfigError(f"documents[{index}]['key'] must be a non-empty string, not {key!r}.")
    paths = [str(p) for value in files.values() for p in (value if isinstance(value, tuple) else (value,))]
    metadata = require_json_object(item.get("metadata"), f"documents[{index}]['metadata']") if "files" in item else {}
    return Document(key or ";".join(paths), files, metadata)
