"""Files from local paths, ObjectStoragePaths and URIs; globs and folders expand to multi-file fields."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from airflow.sdk import ObjectStoragePath
from airflow.sdk.io.store import attach
from fsspec.implementations.memory import MemoryFileSystem
from pytest_mock import MockerFixture

from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.files import OpenWhileRead, collect_files, file_uri
from airflow_flowruns.operators.flow_run import FlowRunOperator
from support.emulator import Emulator
from support.runs import RECONCILIATION_FLOW


@pytest.fixture
def memory_store() -> Iterator[ObjectStoragePath]:
    """An fsspec in-memory object store, attached to Airflow's object storage as ``memory://``."""
    attach(protocol="memory", fs=MemoryFileSystem())
    root = ObjectStoragePath("memory://bucket/in")
    root.mkdir(parents=True, exist_ok=True)
    yield root
    MemoryFileSystem.store.clear()
    MemoryFileSystem.pseudo_dirs[:] = [""]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("b.pdf", "a.pdf", "c.png", ".hidden.pdf"):
        (docs / name).write_bytes(b"%PDF-1.4 " + name.encode())
    (docs / "sub").mkdir()
    (docs / "sub" / "d.pdf").write_bytes(b"%PDF-1.4 d")
    return docs


def names(value: Any) -> list[str]:
    return [p.name for p in value] if isinstance(value, tuple) else [value.name]


def test_a_plain_path_stays_one_local_file(pdf: Path) -> None:
    (path,) = collect_files({"document": str(pdf)}).values()
    assert isinstance(path, Path) and path == pdf


def test_a_uri_becomes_an_object_storage_path(pdf: Path) -> None:
    (path,) = collect_files({"document": pdf.as_uri()}).values()
    assert isinstance(path, ObjectStoragePath) and path.protocol == "file" and path.stat().st_size == pdf.stat().st_size
    assert file_uri(path) == pdf.as_uri() == file_uri(pdf)


def test_a_folder_with_a_trailing_slash_expands_to_its_visible_files_sorted(folder: Path) -> None:
    files = collect_files({"document": f"{folder}/", "uri": f"{folder.as_uri()}/"})
    assert names(files["document"]) == ["a.pdf", "b.pdf", "c.png"]
    assert names(files["uri"]) == ["a.pdf", "b.pdf", "c.png"]
    assert isinstance(files["uri"], tuple) and all(isinstance(p, ObjectStoragePath) for p in files["uri"])


def test_a_folder_without_the_slash_is_refused_with_the_way_to_expand_it(folder: Path) -> None:
    with pytest.raises(FlowRunsConfigError, match=r"is a directory\. To send every file in it, end the path with '/'"):
        collect_files({"document": str(folder)})


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*.pdf", ["a.pdf", "b.pdf"]),
        ("?.p*", ["a.pdf", "b.pdf", "c.png"]),
        ("**/*.pdf", ["a.pdf", "b.pdf", "d.pdf"]),
    ],
)
def test_a_glob_expands_to_the_matching_files_sorted(folder: Path, pattern: str, expected: list[str]) -> None:
    local = collect_files({"document": f"{folder}/{pattern}"})["document"]
    uri = collect_files({"document": f"{folder.as_uri()}/{pattern}"})["document"]
    assert names(local) == names(uri) == expected


def test_globs_and_paths_in_a_list_flatten_into_one_field(folder: Path, pdf: Path) -> None:
    files = collect_files({"attachments": [pdf, f"{folder}/*.pdf", ObjectStoragePath(f"{folder.as_uri()}/c.png")]})
    assert names(files["attachments"]) == ["doc.pdf", "a.pdf", "b.pdf", "c.png"]


def test_a_name_with_brackets_that_exists_is_taken_literally(tmp_path: Path) -> None:
    odd = tmp_path / "scan [1].pdf"
    odd.write_bytes(b"%PDF-1.4")
    assert collect_files({"document": str(odd)})["document"] == odd


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{folder}/*.tiff", r"'.*/docs/\*\.tiff' matched no files"),
        ("{folder}/empty/", r"matched no files"),
        ("{folder}/a.pdf/", r"ends with '/' but is not a folder"),
        ("nosuchscheme://bucket/a.pdf", r"files\['document'\]: cannot open 'nosuchscheme://bucket/a\.pdf'"),
    ],
)
def test_expansions_that_find_nothing_are_refused(folder: Path, value: str, message: str) -> None:
    (folder / "empty").mkdir()
    with pytest.raises(FlowRunsConfigError, match=message):
        collect_files({"document": value.format(folder=folder)})


def test_every_expanded_file_is_checked(folder: Path) -> None:
    (folder / "zero.pdf").write_bytes(b"")
    with pytest.raises(FlowRunsConfigError, match=r"zero\.pdf' is empty"):
        collect_files({"document": f"{folder}/*.pdf"})


def test_without_checks_names_resolve_even_when_files_are_gone(folder: Path) -> None:
    files = collect_files({"document": f"{folder}/*.pdf", "gone": "/nowhere/x.pdf"}, check=False)
    assert names(files["document"]) == ["a.pdf", "b.pdf"] and names(files["gone"]) == ["x.pdf"]


def test_memory_store_files_glob_and_upload_over_http(
    memory_store: ObjectStoragePath,
    tableflow_conn: str,
    emulator: Emulator,
    pdfs: dict[str, Path],
    mocker: MockerFixture,
) -> None:
    (memory_store / "po.pdf").write_bytes(b"%PDF-1.4 purchase order")
    (memory_store / "inv.pdf").write_bytes(b"%PDF-1.4 invoice, a little longer")
    for i in range(3):
        (memory_store / f"att-{i}.pdf").write_bytes(b"%PDF-1.4 " + b"x" * (100 + i))
    op = FlowRunOperator(
        task_id="t",
        flowruns_conn_id=tableflow_conn,
        flow_id=RECONCILIATION_FLOW,
        files={
            "purchase_order": "memory://bucket/in/po.pdf",
            "invoice": memory_store / "inv.pdf",
            "attachments": "memory://bucket/in/att-*.pdf",
        },
        deferrable=False,
        poll_interval=0.05,
    )
    result = op.execute({"ti": mocker.MagicMock(try_number=1)})

    assert result["state"] == "succeeded"
    (run,) = emulator.runs()
    assert sorted((f["field"], f["filename"], f["size"]) for f in run["files"]) == [
        ("attachments_1", "att-0.pdf", 109),
        ("attachments_2", "att-1.pdf", 110),
        ("attachments_3", "att-2.pdf", 111),
        ("invoice", "inv.pdf", 33),
        ("purchase_order", "po.pdf", 23),
    ]


def test_a_memory_store_folder_expands(memory_store: ObjectStoragePath) -> None:
    for name in ("b.pdf", "a.pdf"):
        (memory_store / name).write_bytes(b"%PDF-1.4")
    (found,) = collect_files({"document": "memory://bucket/in/"}).values()
    assert isinstance(found, tuple) and [str(p) for p in found] == [
        "memory://bucket/in/a.pdf",
        "memory://bucket/in/b.pdf",
    ]


def test_a_templated_uri_renders_before_it_resolves(folder: Path) -> None:
    op = FlowRunOperator(task_id="t", flow_id="f", files={"document": "file://{{ params.dir }}/*.pdf"})
    op.render_template_fields({"params": {"dir": str(folder)}})  # type: ignore[arg-type]
    assert names(op.start_request().files["document"]) == ["a.pdf", "b.pdf"]


class _WatchedFile:
    """A file to upload that counts how many of its kind are open at once."""

    open_now = 0
    most_open = 0

    def __init__(self, path: Path) -> None:
        self.path, self.name, self.suffix = path, path.name, path.suffix

    def stat(self) -> Any:
        return self.path.stat()

    def open(self, mode: str) -> io.BytesIO:
        _WatchedFile.open_now += 1
        _WatchedFile.most_open = max(_WatchedFile.most_open, _WatchedFile.open_now)
        return _CountedClose(self.path.read_bytes())


class _CountedClose(io.BytesIO):
    def close(self) -> None:
        if not self.closed:
            _WatchedFile.open_now -= 1
        super().close()


def test_each_upload_part_is_open_only_while_it_is_sent(tmp_path: Path) -> None:
    """A run with more files than the descriptor limit allows open at once still uploads: one at a time."""
    files = []
    for i in range(50):
        (tmp_path / f"{i}.pdf").write_bytes(b"%PDF-" + str(i).encode() * 100)
        files.append(_WatchedFile(tmp_path / f"{i}.pdf"))
    parts: list[tuple[str, tuple[str, Any, str]]] = [
        ("document", (f.name, OpenWhileRead(f), "application/pdf")) for f in files
    ]
    request = httpx.Request("POST", "http://127.0.0.1/upload", files=parts)
    assert _WatchedFile.open_now == 0, "building the request (its length included) opens nothing"
    assert isinstance(request.stream, httpx.SyncByteStream)
    body = b"".join(request.stream)
    assert int(request.headers["content-length"]) == len(body)
    assert all(b"%PDF-" + str(i).encode() * 100 in body for i in range(50))
    assert _WatchedFile.most_open == 1
    assert _WatchedFile.open_now == 0
