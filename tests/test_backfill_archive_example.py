"""The archive backfill example end to end with `airflow dags test`: one batch task, then the same archive in four
shards, against the emulator's Extend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from support.airflow import dags_test
from support.emulator import API_KEY, Emulator

pytestmark = pytest.mark.integration

DOCUMENTS = ("2024/01/inv-001.pdf", "2024/01/inv-002.pdf", "2024/02/inv-003.pdf", "top.pdf", "2025/inv-004.pdf")
"""The archive's PDFs as document keys: paths below the archive folder, at several depths."""


def archive(tmp_path: Path) -> dict[str, str]:
    """An archive of DOCUMENTS plus files the example's glob leaves out, and the DAG's environment."""
    root = tmp_path / "archive"
    for key in DOCUMENTS:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(b"%PDF-1.4\n% " + key.encode() + b"\n%%EOF\n")
    (root / "2024" / "notes.txt").write_text("not a document")
    (root / ".hidden.pdf").write_bytes(b"%PDF-1.4\n% hidden\n%%EOF\n")
    return {
        "AIRFLOW_VAR_FLOWRUNS_ARCHIVE_DIR": str(root),
        "AIRFLOW_VAR_FLOWRUNS_ARCHIVE_OUTPUTS": str(tmp_path / "outputs"),
    }


def extend_default(emulator: Emulator) -> str:
    return json.dumps({"conn_type": "extend", "password": API_KEY, "host": emulator.url})


def uploaded_names(emulator: Emulator) -> list[str]:
    """The file name each run was started with, as Extend lists it."""
    return [f["name"] for run in emulator.runs() for f in run["files"]]


def test_one_batch_task_runs_every_document_once_and_lands_it(
    airflow_home: Path, emulator: Emulator, tmp_path: Path
) -> None:
    env = archive(tmp_path)

    state, tasks, xcom = dags_test(
        airflow_home, "backfill_archive", AIRFLOW_CONN_EXTEND_DEFAULT=extend_default(emulator), **env
    )

    assert (state, tasks) == ("success", {"extract_archive": "success", "report": "success"})
    summary: dict[str, Any] = xcom["extract_archive.return_value"]
    # `airflow dags test` resumes a deferred task with the trigger's event alone, so ``started`` is not checked here.
    assert summary["documents"] == len(DOCUMENTS) == sum(summary["counts"].values())
    assert summary["failed_documents"] == []
    manifest = json.loads(Path(summary["manifest"]).read_text())
    assert summary["manifest"] == str(tmp_path / "outputs" / "_MANIFEST.json")
    assert sorted(item["document_key"] for item in manifest["items"]) == sorted(DOCUMENTS)
    for item in manifest["items"]:
        landing = Path(item["landing"])
        assert landing.parent == tmp_path / "outputs" / Path(item["document_key"]).parent
        assert (landing / "outputs.json").is_file() and (landing / "_MANIFEST.json").is_file()
    assert len(emulator.runs()) == len(DOCUMENTS)
    keyed = [name.split("~", 1) for name in uploaded_names(emulator)]  # "{run key}~{file name}"
    assert sorted(name for _, name in keyed) == sorted(Path(key).name for key in DOCUMENTS)
    assert all(run_key.startswith("af-") for run_key, _ in keyed)
    assert xcom["report.return_value"].startswith(f"{len(DOCUMENTS)} documents: ")


def test_four_shards_split_the_archive_without_overlap(airflow_home: Path, emulator: Emulator, tmp_path: Path) -> None:
    env = archive(tmp_path)

    state, tasks, _ = dags_test(
        airflow_home, "backfill_archive_sharded", AIRFLOW_CONN_EXTEND_DEFAULT=extend_default(emulator), **env
    )

    assert (state, tasks) == ("success", {"extract_archive": "success"})
    manifests = sorted((tmp_path / "outputs").glob("_MANIFEST.shard-*.json"))
    assert [path.name for path in manifests] == [f"_MANIFEST.shard-{shard}-of-4.json" for shard in range(4)]
    keys = [item["document_key"] for path in manifests for item in json.loads(path.read_text())["items"]]
    assert sorted(keys) == sorted(DOCUMENTS)
    assert len(emulator.runs()) == len(DOCUMENTS)
