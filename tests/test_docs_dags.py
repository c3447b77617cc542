"""Every DAG the README and the documentation show runs against the emulator, so a page cannot drift from what
works: each included example DAG and each ```` ```python ```` block, collected and classified by
``support/doc_blocks.py`` (its docstring has the rules), one test per DAG so they spread over pytest-xdist's
workers."""

from __future__ import annotations

import importlib
import subprocess
from pathlib import Path

import pytest

from support.airflow import airflow_env, dags_test_command, last_dag_run
from support.doc_blocks import DocBlock, collect, connections, make_documents, provider_imports, variables
from support.emulator import Emulator

try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.1
    from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

pytestmark = pytest.mark.integration

BLOCKS = collect()
DAGS = [pytest.param(block, dag_id, id=f"{block.id}:{dag_id}") for block in BLOCKS for dag_id in block.dag_ids]
OTHERS = [pytest.param(block, id=block.id) for block in BLOCKS if not block.dag_ids]
AT_LEAST_RUN = 18
"""DAG runs the pages showed when the check was written (20): fewer means blocks stopped being collected."""


def test_the_pages_show_dags_the_check_runs() -> None:
    """The check cannot pass by collecting nothing: the pages' DAGs, included example DAGs among them, run."""
    runs = [f"{block.id}:{dag_id}" for block in BLOCKS if not block.load_only for dag_id in block.dag_ids]
    assert len(runs) >= AT_LEAST_RUN, runs
    assert {block.kind for block in BLOCKS} >= {"dag", "fragment"}
    assert sum(1 for block in BLOCKS if block.included) >= 10


@pytest.mark.parametrize(("block", "dag_id"), DAGS)
def test_shown_dag_runs_against_the_emulator(
    block: DocBlock, dag_id: str, airflow_home: Path, emulator: Emulator, tmp_path: Path
) -> None:
    assert block.problem is None, block.problem
    data, dags = tmp_path / "data", tmp_path / "dags"
    dags.mkdir()
    text = block.dag_file(data)
    (dags / f"{dag_id}.py").write_text(text)
    if block.load_only:
        loaded = DagBag(dag_folder=dags)
        assert (loaded.import_errors, dag_id in loaded.dag_ids) == ({}, True), f"{block.load_only}\n{text}"
        return
    env = variables(text, data)
    make_documents(text, data, [Path(value.removeprefix("file://")) for value in env.values()])
    platforms = emulator.control.get("/discovery").raise_for_status().json()["platforms"]
    env |= connections(text, platforms) | {"AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    done = subprocess.run(
        dags_test_command(dag_id), env=airflow_env(airflow_home, **env), capture_output=True, text=True, timeout=300
    )
    output = f"{block.id} as run:\n{text}\n--- airflow dags test:\n{done.stdout[-4000:]}{done.stderr[-4000:]}"
    assert done.returncode == 0, output
    state, tasks, _ = last_dag_run(airflow_home, dag_id)
    assert (state, [task for task, end in tasks.items() if end not in ("success", "skipped")]) == ("success", []), (
        f"{tasks}\n{output}"
    )


@pytest.mark.parametrize("block", OTHERS)
def test_shown_code_compiles_and_its_imports_resolve(block: DocBlock) -> None:
    if block.kind == "skip" and block.problem is None:
        pytest.skip(f"{block.id}: marked docs-check: skip ({block.marker})")
    assert block.problem is None, block.problem
    compile(block.source, block.id, "exec")
    assert not isinstance(block.tree, SyntaxError)
    for module, name in provider_imports(block.tree):
        imported = importlib.import_module(module)
        assert name is None or hasattr(imported, name), f"{block.id}: {module} has no {name}"
