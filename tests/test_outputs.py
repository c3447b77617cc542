"""Each platform's outputs, normalized from golden run objects shaped as the vendors' SDK models say (no I/O);
that every platform's outputs are read at all is the platform contract's (``tests/test_contract.py``)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from airflow_flowruns.outputs.model import (
    KINDS,
    LONGEST_NAME,
    ApiDownload,
    PresignedDownload,
    Review,
    file_call,
    folder_name,
    outputs_document,
    safe_segment,
)
from airflow_flowruns.platforms import PLATFORMS, output_reader
from airflow_flowruns.platforms.base import ConnectionSettings
from support.airflow import ROOT
from support.golden import golden

SDK_PYTHON = ROOT / ".venv-sdk" / "bin" / "python"


def by_name(outputs: list[Any]) -> dict[str, Any]:
    return {output.name: output for output in outputs}


def test_extend_fields_classification_and_splits_with_the_review_that_changed_a_value() -> None:
    read = output_reader("extend").read(golden("extend", "workflow_run_reviewed.json"))
    outputs = by_name(read.outputs)
    assert read.reviewed is True
    assert outputs["Document type"].kind == "classification"
    assert (outputs["Document type"].value, outputs["Document type"].confidence) == ("invoice", 0.93)
    vendor = outputs["vendor"]
    assert (vendor.kind, vendor.step, vendor.value, vendor.confidence) == (
        "field",
        "Invoice fields",
        "Acme Supplies Ltd",
        0.98,
    )
    assert vendor.review is None
    total = outputs["total"]
    assert total.value == 1243.5 and total.review == Review(initial=1234.5, reviewed=1243.5)
    # no logprobs on the reviewed field: the OCR confidence stands
    assert total.confidence == 0.88
    assert outputs["line_items"].value == [{"description": "Paper", "amount": 1243.5}]
    assert outputs["line_items"].review is None and outputs["line_items"].confidence is None
    assert outputs["INV-0042"].kind == "split" and outputs["cover letter"].value["start_page"] == 3
    files = {file.id: file for file in read.files}
    assert set(files) == {"file_split_Aa11", "file_split_Bb22"}
    assert files["file_split_Aa11"].name == "acme-0042-invoice.pdf"  # named by the step's file summary
    assert files["file_split_Bb22"].name == "file_split_Bb22"  # not listed anywhere: its id
    download = files["file_split_Aa11"].download
    assert isinstance(download, PresignedDownload)
    assert (download.lookup.method, download.lookup.path, download.url_field) == (
        "GET",
        "/files/file_split_Aa11",
        "presignedUrl",
    )
    assert read.updated_at == "2025-04-28T17:20:06+00:00"  # endTime, the latest of the run's times


def test_extend_legacy_extraction_output() -> None:
    read = output_reader("extend").read(golden("extend", "workflow_run_legacy.json"))
    outputs = by_name(read.outputs)
    assert (outputs["vendor"].value, outputs["vendor"].confidence) == ("Globex Corporation", 0.91)
    assert (outputs["total"].value, outputs["total"].confidence, outputs["total"].step) == (88.0, None, "Extraction")
    assert read.files == [] and read.reviewed is False


def test_extend_run_without_results_has_no_outputs() -> None:
    run = golden("extend", "workflow_run_reviewed.json")
    read = output_reader("extend").read({**run, "stepRuns": []})
    assert read.outputs == [] and read.files == []


def test_noxus_output_values_and_files_fetched_with_the_key() -> None:
    read = output_reader("noxus").read(golden("noxus", "run.json"))
    outputs = by_name(read.outputs)
    assert outputs["summary"].kind == "text"
    assert outputs["fields"].kind == "data" and outputs["fields"].value["total"] == 1243.5
    report = outputs["report"]
    assert report.kind == "file"
    assert report.value == {
        "file_id": "9c1d2e3f-aaaa-4bbb-8ccc-0123456789ab",
        "name": "report.pdf",
        "path": "files/9c1d2e3f-aaaa-4bbb-8ccc-0123456789ab/report.pdf",
    }
    # a list of files stays a list; an id missing from the object comes from its spot:// uri
    assert [page["file_id"] for page in outputs["pages"].value] == ["11111111-2222-4333-8444-555555555555"]
    downloads = [file.download for file in read.files]
    assert all(isinstance(download, ApiDownload) for download in downloads)
    assert [d.call.path for d in downloads if isinstance(d, ApiDownload)] == [
        "/v1/file/9c1d2e3f-aaaa-4bbb-8ccc-0123456789ab",
        "/v1/file/11111111-2222-4333-8444-555555555555",
    ]
    assert read.updated_at == "2025-05-02T08:00:41.250000+00:00"


def test_stackai_outputs_by_node_from_the_json_encoded_listing_item() -> None:
    read = output_reader("stackai").read(golden("stackai", "listing_item.json"))
    outputs = by_name(read.outputs)
    assert outputs["out-0"].kind == "text" and outputs["out-0"].value.startswith("The contract")
    assert outputs["out-1"].kind == "data" and outputs["out-1"].value == {"renewal": "2025-07-01", "risk": "low"}
    assert read.files == []
    # the run answer, where the listing does not show the run yet, reads the same
    answer = output_reader("stackai").read({"run_id": "x", "outputs": {"out-0": "done"}})
    assert [(o.name, o.value) for o in answer.outputs] == [("out-0", "done")]


def test_tableflow_drive_files_are_references_only() -> None:
    read = output_reader("tableflow").read(golden("tableflow", "run.json"))
    (output,) = read.outputs
    assert output.kind == "file_reference" and output.name == "reconciliation.xlsx"
    assert output.value["sheets"] == ["Summary", "Mismatches"]
    (file,) = read.files
    assert file.download is None and "no call that downloads drive_files" in (file.note or "")
    assert read.updated_at == "2025-04-30T08:00:42+00:00"


def test_outputs_document_is_the_documented_shape() -> None:
    raw = golden("extend", "workflow_run_reviewed.json")
    platform = PLATFORMS["extend"](ConnectionSettings("c", "key", "https://api.extend.ai"))
    run = platform.parse_run(raw)
    document = outputs_document(run, output_reader("extend").read(raw))
    assert document["format"] == "airflow-flowruns/outputs/1"
    assert (document["platform"], document["run_id"], document["state"]) == ("extend", run.id, "succeeded")
    assert {entry["kind"] for entry in document["outputs"]} <= set(KINDS)
    total = next(entry for entry in document["outputs"] if entry["name"] == "total")
    assert (total["initial_value"], total["reviewed_value"], total["value"]) == (1234.5, 1243.5, 1243.5)
    vendor = next(entry for entry in document["outputs"] if entry["name"] == "vendor")
    assert "initial_value" not in vendor and "reviewed_value" not in vendor
    assert all(entry["path"].startswith("files/") and entry["downloaded"] for entry in document["files"])
    json.dumps(document)


@pytest.mark.parametrize(
    ("name", "fixture", "usage"),
    [
        ("extend", "workflow_run_reviewed.json", {"credits": 12.0, "pages": 3, "tokens": None}),
        ("stackai", "listing_item.json", {"credits": None, "pages": None, "tokens": 812}),
        ("tableflow", "run.json", None),
    ],
)
def test_outputs_document_says_what_the_run_consumed(name: str, fixture: str, usage: dict[str, Any] | None) -> None:
    """``usage`` at the top: each measure null where the platform reports it not, null where it reports none."""
    extras = {"org_id": "o"} if name == "stackai" else {}
    platform = PLATFORMS[name](ConnectionSettings("c", "key", PLATFORMS[name].default_base_url, extras))
    raw = golden(name, fixture)
    assert outputs_document(platform.parse_run(raw), output_reader(name).read(raw))["usage"] == usage


@pytest.mark.parametrize(
    ("name", "expected"), [("../../etc/passwd", "etc_passwd"), ("", "_"), ("a b/c.pdf", "a_b_c.pdf")]
)
def test_platform_names_cannot_leave_the_landing_folder(name: str, expected: str) -> None:
    assert safe_segment(name) == expected


def test_an_id_of_letters_digits_dashes_and_underscores_keeps_its_folder_name() -> None:
    """Landings made before ids were encoded are still found, and found unchanged."""
    for kept in ("workflow_run_xKm9pNv3qWsY_jL2tR5Dh", "0b9e4e1c-7d0a-4f7e-9a55-2f1d3c4b5a69", "file_split_Aa11"):
        assert folder_name(kept) == kept


def test_two_ids_never_share_a_folder_name() -> None:
    ids = ["a/b", "a_b", "_a_b_", "a%2Fb", "a%252Fb", "a b", "r1", "r1.partial", ".", "..", "", "~", "\u00e9"]
    ids += ["e\u0301", "\ud800", "x" * LONGEST_NAME, "x" * (LONGEST_NAME + 1), "x" * (LONGEST_NAME + 2)]
    names = [folder_name(i) for i in ids]
    assert len(set(names)) == len(ids)
    assert all(name and "." not in name and "/" not in name and len(name) <= LONGEST_NAME for name in names)


@pytest.mark.parametrize("file_id", ["", ".", ".."])
def test_a_file_id_that_names_no_file_is_not_fetched(file_id: str) -> None:
    assert file_call("get file", "/files", file_id) is None


def test_a_shape_that_cannot_be_read_names_the_problem() -> None:
    from airflow_flowruns.exceptions import FlowRunsResponseError

    with pytest.raises(FlowRunsResponseError, match="Extend workflow run"):
        output_reader("extend").read({"stepRuns": "not a list"})


def sdk_models(platform: str, *runs: dict[str, Any], tmp: Path) -> list[Any]:
    """What the vendor SDK's own models make of ``runs`` (see tests/vendor_sdk/outputs_models.py)."""
    assert SDK_PYTHON.exists(), "the SDK virtualenv is missing: run `make test`, which creates .venv-sdk"
    paths = []
    for index, run in enumerate(runs):
        paths.append(tmp / f"{platform}-{index}.json")
        paths[-1].write_text(json.dumps(run))
    script = Path(__file__).parent / "vendor_sdk" / "outputs_models.py"
    done = subprocess.run(
        [str(SDK_PYTHON), str(script), platform, *map(str, paths)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.strip().splitlines()]


@pytest.mark.integration
def test_golden_runs_are_valid_for_the_official_sdks(tmp_path: Path) -> None:
    """The fixtures are what the SDKs' own models accept, each step's result parsed into its SDK type."""
    reviewed, legacy = sdk_models(
        "extend",
        golden("extend", "workflow_run_reviewed.json"),
        golden("extend", "workflow_run_legacy.json"),
        tmp=tmp_path,
    )
    assert reviewed == ["ClassifyResult:ClassifyRun", "ExtractResult:ExtractRun", "SplitResult:SplitRun"]
    assert legacy == ["ExtractResult:ExtractRun"]
    (files,) = sdk_models("noxus", golden("noxus", "run.json"), tmp=tmp_path)
    assert files == ["9c1d2e3f-aaaa-4bbb-8ccc-0123456789ab", "11111111-2222-4333-8444-555555555555"]


@pytest.mark.parametrize(
    ("destination", "namespace", "name"),
    [
        ("s3://aws_default@bucket/landed", "s3://bucket", "landed/extend/flow/run"),
        ("s3://bucket/landed", "s3://bucket", "landed/extend/flow/run"),
        ("gs://google_cloud_default@bucket/landed", "gs://bucket", "landed/extend/flow/run"),
        ("gcs://bucket/landed", "gs://bucket", "landed/extend/flow/run"),
        ("/data/landed", "file", "/data/landed/extend/flow/run"),
        ("file:///data/landed", "file", "/data/landed/extend/flow/run"),
    ],
)
def test_a_landing_is_named_per_the_openlineage_naming_spec_without_the_connection_id(
    destination: str, namespace: str, name: str
) -> None:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from airflow_flowruns.lineage import landing_dataset
    from airflow_flowruns.outputs.landing import Landing

    folder = ObjectStoragePath(destination) / "extend" / "flow" / "run"
    landing = Landing(str(folder), str(folder / "_MANIFEST.json"), 1, 0, 0, 10, written=True)
    dataset = landing_dataset(landing)
    assert (dataset.namespace, dataset.name) == (namespace, name)
