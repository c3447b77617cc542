"""OpenLineage: uploaded files in, the flow run out, through the OpenLineage provider's own extraction path."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.openlineage.extractors.base import DefaultExtractor
from airflow.providers.openlineage.extractors.manager import ExtractorManager
from openlineage.client.serde import Serde
from pytest_mock import MockerFixture

from airflow_flowruns import lineage
from airflow_flowruns.exceptions import FlowRunFailedError
from airflow_flowruns.lineage import file_dataset
from airflow_flowruns.operators.flow_run import FlowRunOperator
from airflow_flowruns.platforms.extend.emulator import EXTEND_INVOICE_WORKFLOW
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_FAILING_FLOW
from support.airflow import dags_test
from support.emulator import API_KEY, Emulator, set_connection


def as_json(value: Any) -> Any:
    return json.loads(Serde.to_json(value))


@pytest.mark.integration
def test_a_dag_run_emits_files_in_and_the_flow_run_out(airflow_home: Path, emulator: Emulator, pdf: Path) -> None:
    """The real listener, extractor and OpenLineage's file transport, in `airflow dags test`."""
    invoice = pdf.parent / "inv.pdf"
    invoice.write_bytes(pdf.read_bytes())
    events_file = pdf.parent / "openlineage"
    transport = {"type": "file", "log_file_path": str(events_file), "append": True}
    state, _, xcom = dags_test(
        airflow_home,
        "flow_run_assets_producer",
        AIRFLOW_CONN_TABLEFLOW_DEFAULT=json.dumps(
            {"conn_type": "tableflow", "password": API_KEY, "host": emulator.url}
        ),
        AIRFLOW_VAR_FLOWRUNS_DATA_DIR=str(pdf.parent),
        AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps(transport),
    )
    assert state == "success"

    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    (complete,) = [
        e
        for e in events
        if e["eventType"] == "COMPLETE" and e["job"]["name"] == "flow_run_assets_producer.extract_invoices"
    ]
    run = xcom["extract_invoices.return_value"]
    host = emulator.url.removeprefix("http://")
    assert [(d["namespace"], d["name"]) for d in complete["inputs"]] == [("file", str(invoice))]
    (output,) = complete["outputs"]
    assert (output["namespace"], output["name"]) == (f"tableflow://{host}", "sm4llFileFlow000")
    facet = output["facets"]["flowRun"]
    assert {k: facet[k] for k in ("platform", "runId", "flowId", "state", "status", "url")} == {
        "platform": "tableflow",
        "runId": run["id"],
        "flowId": "sm4llFileFlow000",
        "state": "succeeded",
        "status": "completed",
        "url": run["url"],
    }
    assert complete["run"]["facets"]["externalQuery"]["externalQueryId"] == run["id"]
    assert API_KEY not in events_file.read_text()


def test_a_failed_run_is_reported_with_its_final_state(
    tableflow_conn: str, emulator: Emulator, pdf: Path, mocker: MockerFixture
) -> None:
    op = FlowRunOperator(
        task_id="extract",
        flowruns_conn_id=tableflow_conn,
        flow_id=TABLEFLOW_FAILING_FLOW,
        files={"document": pdf.as_uri()},
        deferrable=False,
        poll_interval=0.05,
    )
    with pytest.raises(FlowRunFailedError):
        op.execute({"ti": mocker.MagicMock(try_number=1)})

    extractor_cls = ExtractorManager().get_extractor_class(op)
    assert extractor_cls is DefaultExtractor
    lineage = extractor_cls(op).extract_on_failure(mocker.MagicMock())
    assert lineage is not None
    (run,) = emulator.runs()
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("file", str(pdf))]
    (output,) = lineage.outputs
    assert as_json(output.facets["flowRun"])["state"] == "failed"
    assert as_json(output.facets["flowRun"])["runId"] == run["id"]
    assert "flowRunUsage" not in lineage.run_facets, "TableFlow reports no usage"


def test_what_a_run_consumed_is_a_run_facet_of_the_task(
    emulator: Emulator, pdf: Path, mocker: MockerFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cost is the job run's (this task's), not the flow's: a run facet, each measure Extend reports."""
    conn = set_connection(monkeypatch, "extend_lineage", "extend", emulator.url)
    op = FlowRunOperator(
        task_id="extract",
        flowruns_conn_id=conn,
        flow_id=EXTEND_INVOICE_WORKFLOW,
        files={"file": pdf},
        deferrable=False,
        poll_interval=0.05,
    )
    op.execute({"ti": mocker.MagicMock(try_number=1)})
    lineage = DefaultExtractor(op).extract_on_complete(mocker.MagicMock())
    assert lineage is not None
    facet = as_json(lineage.run_facets["flowRunUsage"])
    assert facet["_schemaURL"].endswith("#/$defs/RunFacet")
    assert {k: v for k, v in facet.items() if not k.startswith("_")} == {
        "platform": "extend",
        "credits": 2.0,
        "pages": 1,
    }


def test_a_task_that_failed_before_starting_a_run_reports_only_its_inputs(
    tmp_path: Path, mocker: MockerFixture
) -> None:
    op = FlowRunOperator(task_id="extract", flow_id="f", files={"document": f"{tmp_path}/*.pdf"})
    (tmp_path / "x.pdf").write_bytes(b"%PDF")
    lineage = DefaultExtractor(op).extract_on_failure(mocker.MagicMock())
    assert lineage is not None and lineage.outputs == []
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("file", str(tmp_path / "x.pdf"))]


def test_lineage_takes_plain_values_and_imports_no_operator() -> None:
    """Operators import lineage (lazily); lineage imports no operator module, not even for type checking."""
    tree = ast.parse(Path(lineage.__file__).read_text())
    imported = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    assert "airflow_flowruns.files" in imported, "the walk sees the module's imports"
    assert sorted(name for name in imported if name.startswith("airflow_flowruns.operators")) == []


@pytest.mark.parametrize(
    ("uri", "namespace", "name"),
    [
        ("file:///data/in/a.pdf", "file", "/data/in/a.pdf"),
        ("s3://bucket/in/a.pdf", "s3://bucket", "in/a.pdf"),
        ("s3://aws_default@bucket/in/a.pdf", "s3://bucket", "in/a.pdf"),
        ("gs://bucket/in/a.pdf", "gs://bucket", "in/a.pdf"),
        ("gcs://bucket/a.pdf", "gs://bucket", "a.pdf"),
        ("abfs://container/in/a.pdf", "abfs://container", "in/a.pdf"),
        ("memory://bucket/a.pdf", "memory://bucket", "a.pdf"),
    ],
)
def test_files_are_named_as_openlineages_naming_spec_says(uri: str, namespace: str, name: str) -> None:
    dataset = file_dataset(uri)
    assert (dataset.namespace, dataset.name) == (namespace, name)


WITHOUT_OPENLINEAGE = """
import sys
from unittest.mock import MagicMock

sys.modules["openlineage"] = None  # any import of the OpenLineage client now fails, as if it were not installed

from airflow_flowruns.operators.flow_run import FlowRunOperator
from airflow_flowruns.sensors.flow_run import FlowRunSensor

op = FlowRunOperator(
    task_id="t", flowruns_conn_id="tf_no_ol", flow_id="sm4llFileFlow000", files={"document": sys.argv[1]},
    deferrable=False, poll_interval=0.05,
)
assert op.execute({"ti": MagicMock(try_number=1)})["state"] == "succeeded"
loaded = sorted(
    m for m, module in sys.modules.items()
    if module is not None and (m.startswith("openlineage") or m.startswith("airflow.providers.openlineage.")
                               and not m.endswith(".get_provider_info") or m == "airflow_flowruns.lineage")
)
assert not loaded, loaded
print("ok")
"""


@pytest.mark.integration
def test_without_the_openlineage_provider_nothing_changes(
    tableflow_conn: str, emulator: Emulator, pdf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_TF_NO_OL", os.environ["AIRFLOW_CONN_TABLEFLOW_TEST"])
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_OPENLINEAGE, str(pdf)], capture_output=True, text=True, env=os.environ.copy()
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stdout[-2000:] + done.stderr[-3000:]
    assert len(emulator.runs()) == 1
