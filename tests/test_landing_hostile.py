"""Landing outputs from a platform that names its files and runs the hard way, answered by the hostile server
(tests/support/hostile_server.py): file ids with ``/``, ``..`` and ``?key=`` must reach the API as one escaped
path segment; outputs naming one file, and ids that clean to one name, must land side by side; a commit that
fails must put the previous landing back; and runs whose ids clean to one folder name must land apart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from airflow.providers.common.compat.sdk import Context
from fsspec.implementations.local import LocalFileSystem

from airflow_flowruns.operators.outputs import FlowRunOutputsOperator
from airflow_flowruns.outputs.model import NO_FILE_ID
from support.emulator import API_KEY, set_connection
from support.hostile_server import Exchange, HostileServer

FLOW = "wf_hostile"
HOSTILE_IDS = ["a/b", "../../v1/runs/other", "x?key=1#top", "50%", "%2e%2e"]
"""File ids an answer may carry: each must reach the API as one segment, ``quote(id, safe="")``."""
NO_FILE_IDS = [".", ".."]
"""File ids that name no file: no request is made for them."""


def file_bytes(file_id: str) -> bytes:
    return f"the bytes of file {file_id!r}\n".encode()


class Platform:
    """The runs and files the hostile server answers with, as Noxus or Extend serve them."""

    def __init__(self, hostile: HostileServer, platform: str) -> None:
        self.hostile = hostile
        self.platform = platform
        self.runs: dict[str, dict[str, Any]] = {}

    def answer(self, ex: Exchange) -> None:
        collection, _, segment = ex.path.partition("?")[0].rpartition("/")
        item = unquote(segment)
        if collection in ("/v1/runs", "/workflow_runs") and item in self.runs:
            ex.send(200, json.dumps(self.runs[item]).encode())
        elif collection == "/files":
            ex.send(200, json.dumps({"presignedUrl": f"{self.hostile.url}/_storage/{segment}"}).encode())
        elif collection in ("/v1/file", "/_storage"):
            ex.send(200, file_bytes(item), Content_Type="application/octet-stream")
        else:
            ex.send(404, b'{"detail": "Not Found"}')

    def add_run(self, run_id: str, files: dict[str, list[tuple[str, str]]]) -> None:
        """A finished run whose outputs name ``files``: output name to its files' ``(id, name)``."""
        if self.platform == "noxus":
            output: dict[str, Any] = {"summary": "done"}
            for name, named in files.items():
                output[name] = [{"id": i, "uri": f"spot://{i}", "name": n, "content_type": None} for i, n in named]
            self.runs[run_id] = {"id": run_id, "workflow_id": FLOW, "status": "completed", "output": output}
            return
        step_runs = [
            {
                "stepType": "SPLIT",
                "step": {"name": name},
                "files": [{"id": i, "name": n} for i, n in named],
                "result": {"splitRun": {"output": {"splits": [{"name": n, "fileId": i} for i, n in named]}}},
            }
            for name, named in files.items()
        ]
        self.runs[run_id] = {"id": run_id, "workflow": {"id": FLOW}, "status": "PROCESSED", "stepRuns": step_runs}


@pytest.fixture(params=["noxus", "extend"])
def platform(hostile: HostileServer, request: pytest.FixtureRequest) -> Iterator[Platform]:
    serving = Platform(hostile, request.param)
    hostile.answer = serving.answer
    hostile.requests.clear()
    yield serving
    hostile.answer = None


def land(platform: Platform, monkeypatch: pytest.MonkeyPatch, run_id: str, out: Path, context: Context) -> Any:
    conn = set_connection(monkeypatch, f"hostile_landing_{platform.platform}", platform.platform, platform.hostile.url)
    operator = FlowRunOutputsOperator(task_id="land", flowruns_conn_id=conn, run=run_id, destination=str(out))
    return operator.execute(context)


def file_requests(hostile: HostileServer) -> list[str]:
    return [r["path"] for r in hostile.requests if r["path"].startswith(("/v1/file/", "/files/"))]


def landed(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_output_file_ids_reach_the_api_as_one_escaped_segment_without_the_key(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, context: Context
) -> None:
    platform.add_run("r1", {"parts": [(file_id, "part.pdf") for file_id in HOSTILE_IDS + NO_FILE_IDS]})
    landing = land(platform, monkeypatch, "r1", tmp_path, context)
    collection = "/v1/file/" if platform.platform == "noxus" else "/files/"
    assert sorted(file_requests(platform.hostile)) == sorted(collection + quote(i, safe="") for i in HOSTILE_IDS)
    assert not [r["path"] for r in platform.hostile.requests if API_KEY in r["path"]]
    assert all("?" not in r["path"] for r in platform.hostile.requests)
    folder = Path(landing["path"])
    document = json.loads((folder / "outputs.json").read_text())
    for entry in document["files"]:
        if entry["id"] in NO_FILE_IDS:
            assert (entry["downloaded"], entry["note"]) == (False, NO_FILE_ID)
        else:
            assert (folder / entry["path"]).read_bytes() == file_bytes(entry["id"])
    assert (landing["files"], landing["file_references"]) == (len(HOSTILE_IDS), len(NO_FILE_IDS))


def test_outputs_naming_one_file_and_ids_that_clean_to_one_name_land_side_by_side(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, context: Context
) -> None:
    report = ("a_b", "report.pdf")
    platform.add_run(
        "r1",
        {
            "first": [report, ("a b", "report.pdf"), ("_a_b_", "report.pdf")],
            "second": [report, ("a:b", "report.pdf")],
        },
    )
    landing = land(platform, monkeypatch, "r1", tmp_path, context)
    folder = Path(landing["path"])
    files = {path: data for path, data in landed(folder).items() if path.startswith("files/")}
    assert files == {
        "files/a_b/report.pdf": file_bytes("a_b"),
        "files/a%20b/report.pdf": file_bytes("a b"),
        "files/_a_b_/report.pdf": file_bytes("_a_b_"),
        "files/a%3Ab/report.pdf": file_bytes("a:b"),
    }
    assert sorted(file_requests(platform.hostile)) == sorted(set(file_requests(platform.hostile)))  # each once
    manifest = [entry["path"] for entry in json.loads((folder / "_MANIFEST.json").read_text())["files"]]
    assert sorted(manifest) == sorted(["run.json", "outputs.json", *files])
    assert landing["files"] == len(files)
    assert sorted(path.name for path in folder.parent.iterdir()) == [folder.name]
    # the same run lands the same names: landing it again finds it unchanged
    assert land(platform, monkeypatch, "r1", tmp_path, context) == {**landing, "written": False}


def test_a_failed_commit_puts_the_previous_landing_back_and_leaves_no_staging_folder(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, context: Context
) -> None:
    platform.add_run("r1", {"parts": [("f1", "one.pdf")]})
    first = land(platform, monkeypatch, "r1", tmp_path, context)
    folder = Path(first["path"])
    before = landed(folder)
    stamps = {path: (folder / path).stat().st_mtime_ns for path in before}
    platform.add_run("r1", {"parts": [("f1", "one.pdf"), ("f2", "two.pdf")]})  # the run changed: re-landed
    move = LocalFileSystem.mv

    def full_disk(self: LocalFileSystem, path1: str, path2: str, **kwargs: Any) -> None:
        if ".partial" in path1:
            raise OSError(28, "No space left on device")
        move(self, path1, path2, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "mv", full_disk)
    with pytest.raises(OSError, match="No space left"):
        land(platform, monkeypatch, "r1", tmp_path, context)
    assert landed(folder) == before
    assert {path: (folder / path).stat().st_mtime_ns for path in before} == stamps
    assert sorted(path.name for path in folder.parent.iterdir()) == [folder.name]
    monkeypatch.setattr(LocalFileSystem, "mv", move)
    again = land(platform, monkeypatch, "r1", tmp_path, context)
    assert again["written"] is True and again["files"] == 2
    assert sorted(path.name for path in folder.parent.iterdir()) == [folder.name]


def test_run_ids_that_clean_to_one_name_land_in_folders_of_their_own(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, context: Context
) -> None:
    run_ids = ["r1.partial", "r1", "a/b", "a_b"]
    for run_id in run_ids:
        platform.add_run(run_id, {"parts": [(f"file-of-{run_id}", "part.pdf")]})
    paths = [Path(land(platform, monkeypatch, run_id, tmp_path, context)["path"]) for run_id in run_ids]
    flow = paths[0].parent
    assert sorted(path.name for path in flow.iterdir()) == ["a%2Fb", "a_b", "r1", "r1%2Epartial"]
    for run_id, folder in zip(run_ids, paths, strict=True):
        assert json.loads((folder / "_MANIFEST.json").read_text())["run_id"] == run_id
        assert json.loads((folder / "run.json").read_text())["id"] == run_id
        (part,) = folder.glob("files/*/part.pdf")
        assert part.read_bytes() == file_bytes(f"file-of-{run_id}")
