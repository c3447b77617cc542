"""Every DAG the README and the documentation show runs against the emulator, so a page cannot drift from what
works: each included example DAG and each ```` ```python ```` block, collected and classified by
``support/doc_blocks.py`` (its docstring has the rules), one test per DAG so they spread over pytest-xdist's
workers."""

from __future__ import annotations

import importlib
import os
import subprocess
from pathlib import Path

import pytest

from support.airflow import ROOT, airflow_env, dags_test_command, last_dag_run
from support.doc_blocks import DocBlock, collect, connections, make_documents, provider_imports, variables
from support.emulator import Emulator
from support.review_answers import REVIEWER, DagsTest

pytestmark = pytest.mark.integration

BLOCKS = collect()
DAGS = [pytest.param(block, dag_id, id=f"{block.id}:{dag_id}") for block in BLOCKS for dag_id in block.dag_ids]
OTHERS = [pytest.param(block, id=block.id) for block in BLOCKS if not block.dag_ids]
AT_LEAST_RUN = 20
"""DAG runs the pages showed when the check was written (21, two of them asking for review in Airflow): fewer
means blocks stopped being collected."""
RUN_SECONDS = 300


def test_the_pages_show_dags_the_check_runs() -> None:
    """The check cannot pass by collecting nothing: the pages' DAGs, included example DAGs among them, run."""
    runs = [f"{block.id}:{dag_id}" for block in BLOCKS for dag_id in block.dag_ids]
    assert len(runs) >= AT_LEAST_RUN, runs
    assert any(block.asks_in_airflow for block in BLOCKS)
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
    env = variables(text, data)
    make_documents(text, data, [Path(value.removeprefix("file://")) for value in env.values()])
    platforms = emulator.control.get("/discovery").raise_for_status().json()["platforms"]
    env |= connections(text, platforms) | {"AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    env = airflow_env(airflow_home, **env)
    returncode, log, accepted = (
        reviewed_dags_test(airflow_home, dag_id, env) if block.asks_in_airflow else (*dags_test(dag_id, env), 0)
    )
    output = f"{block.id} as run:\n{text}\n--- airflow dags test ({accepted} Required Action(s) accepted):\n{log}"
    assert returncode == 0, output
    state, tasks, xcom = last_dag_run(airflow_home, dag_id)
    assert (state, [task for task, end in tasks.items() if end not in ("success", "skipped")]) == ("success", []), (
        f"{tasks}\n{output}"
    )
    decided = [value["by"] for key, value in xcom.items() if key.endswith(".review") and value]
    assert decided == [REVIEWER["name"]] * accepted, f"{xcom}\n{output}"


def dags_test(dag_id: str, env: dict[str, str]) -> tuple[int, str]:
    """``airflow dags test`` of the DAG: its exit code and the end of its output."""
    done = subprocess.run(dags_test_command(dag_id), env=env, capture_output=True, text=True, timeout=RUN_SECONDS)
    return done.returncode, done.stdout[-4000:] + done.stderr[-4000:]


def reviewed_dags_test(home: Path, dag_id: str, env: dict[str, str]) -> tuple[int, str, int]:
    """``airflow dags test`` of a DAG asking for review in Airflow, the check accepting each Required Action its
    run opens (none when no run stops for review): its exit code, the end of its output and how many it accepted.
    """
    tests = os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))
    dag = DagsTest.start(home, dag_id, {**env, "PYTHONPATH": tests})
    try:
        accepted = dag.accept_each(timeout=RUN_SECONDS)
    finally:
        dag.stop()
    return dag.process.returncode, dag.output()[-8000:], accepted


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
