"""The docs check's collector (``support/doc_blocks.py``) on pages written here: what it classifies, refuses,
wraps and points at the emulator."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.doc_blocks import DocBlock, collect, connections, make_documents, rewrite_paths, variables

PLATFORMS = {
    name: {
        "connection": {"env_var": f"AIRFLOW_CONN_{name.upper()}_DEFAULT", "json": f'{{"conn_type": "{name}"}}'},
        "flows": [{"id": flow}],
    }
    for name, flow in (("tableflow", "dk4g1tUg1uHLs8YU"), ("extend", "workflow_invoice"))
}


def page(tmp_path: Path, text: str) -> list[DocBlock]:
    (tmp_path / "docs").mkdir(exist_ok=True)
    (tmp_path / "README.md").write_text("# nothing to run\n")
    (tmp_path / "docs" / "page.md").write_text(text)
    return collect(tmp_path)


def test_blocks_are_classified_by_what_they_show(tmp_path: Path) -> None:
    blocks = page(
        tmp_path,
        '```python\nfrom airflow.sdk import DAG\nwith DAG("shown"):\n    ...\n```\n\n'
        '```python\nFlowRunOperator(task_id="t", flow_id="f")\n```\n\n'
        "```python\nfrom airflow_flowruns.hooks.flow_run import FlowRunsHook\n```\n\n"
        "```bash\nnot python\n```\n",
    )
    assert [(block.line, block.kind, block.dag_ids) for block in blocks] == [
        (1, "dag", ["shown"]),
        (7, "fragment", ["docs_page_7"]),
        (11, "code", []),
    ]
    assert all(block.problem is None for block in blocks)


def test_a_block_that_is_not_python_fails_unless_marked_with_a_reason(tmp_path: Path) -> None:
    broken = "```python\nFlowRunOperator(task_id='t', ...,)\n```\n"
    unmarked, marked, no_reason = page(
        tmp_path,
        broken + "\n<!-- docs-check: skip (elided) -->\n" + broken + "\n<!-- docs-check: skip -->\n" + broken,
    )
    assert unmarked.kind == "unreadable" and "not Python" in str(unmarked.problem)
    assert (marked.kind, marked.marker, marked.problem) == ("skip", "elided", None)
    assert "names no reason" in str(no_reason.problem)


def test_a_fragment_runs_in_a_dag_with_the_imports_it_leaves_out(tmp_path: Path) -> None:
    (fragment,) = page(tmp_path, '```python\nFlowRunSensor(task_id="wait", run_id="r1", files="/data/a.pdf")\n```\n')
    dag_file = fragment.dag_file(tmp_path / "data")
    assert "from airflow_flowruns.sensors.flow_run import FlowRunSensor" in dag_file
    assert f'files="{tmp_path}/data/data/a.pdf"' in dag_file
    compile(dag_file, "fragment", "exec")


def test_placeholder_locations_and_variables_map_into_the_data_folder(tmp_path: Path) -> None:
    text = rewrite_paths(
        "{{ var.value.get('flowruns_data_dir', '/data') }}/inv.pdf 'file:///data/x' \"s3://bucket/out\" "
        "{{ var.value.get('flowruns_events_db', '') }} {{ var.value.flowruns_invoices_dir }} '/datasets'",
        tmp_path,
    )
    assert f"'{tmp_path}/data'" in text and f"'file://{tmp_path}/data/x'" in text
    assert f'"file://{tmp_path}/bucket/out"' in text and "'/datasets'" in text
    env = variables(text, tmp_path)
    assert env == {
        "AIRFLOW_VAR_FLOWRUNS_DATA_DIR": str(tmp_path / "flowruns_data_dir"),
        "AIRFLOW_VAR_FLOWRUNS_INVOICES_DIR": str(tmp_path / "flowruns_invoices_dir"),
    }
    make_documents(text, tmp_path, [Path(folder) for folder in env.values()])
    assert (tmp_path / "flowruns_data_dir" / "inv.pdf").read_bytes().startswith(b"%PDF")


def test_a_connection_is_pointed_at_the_platform_its_id_or_its_flow_names() -> None:
    text = 'FlowRunOperator(flowruns_conn_id="invoices_prod", flow_id="workflow_invoice")\nconn_id="tableflow_eu"'
    env = connections(text, PLATFORMS)
    assert env["AIRFLOW_CONN_INVOICES_PROD"] == env["AIRFLOW_CONN_EXTEND_DEFAULT"] == '{"conn_type": "extend"}'
    assert env["AIRFLOW_CONN_TABLEFLOW_EU"] == '{"conn_type": "tableflow"}'
    with pytest.raises(ValueError, match="'somewhere'"):
        connections('FlowRunOperator(flowruns_conn_id="somewhere", flow_id="unknown")', PLATFORMS)
