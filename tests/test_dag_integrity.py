"""Every example DAG imports cleanly, as Airflow's DAG processor would load it, and serializes."""

from __future__ import annotations

from pathlib import Path

import pytest

try:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization
except ImportError:  # Airflow 3.1
    from airflow.models.dagbag import DagBag  # type: ignore[no-redef]
    from airflow.serialization.serialized_objects import SerializedDAG as DagSerialization  # type: ignore[no-redef,assignment]

EXAMPLES = Path(__file__).resolve().parent.parent / "example_dags"


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=EXAMPLES)


def test_every_example_dag_imports_without_errors(dagbag: DagBag) -> None:
    assert dagbag.import_errors == {}


def test_every_example_file_defines_a_dag(dagbag: DagBag) -> None:
    files = {Path(dag.fileloc).name for dag in dagbag.dags.values()}
    assert files == {path.name for path in EXAMPLES.glob("*.py")}


@pytest.mark.parametrize("dag_id", sorted(DagBag(dag_folder=EXAMPLES).dag_ids))
def test_every_example_dag_serializes_and_is_tagged(dagbag: DagBag, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    assert {"flowruns", "example"} <= set(dag.tags)
    assert DagSerialization.to_dict(dag)["dag"]["dag_id"] == dag_id


def test_a_broken_dag_file_is_reported(tmp_path: Path) -> None:
    """The check above can fail: a DAG file that does not import shows up in import_errors."""
    (tmp_path / "broken.py").write_text("from airflow.sdk import dag\nfrom airflow_flowruns.operators import Nope\n")
    assert list(DagBag(dag_folder=tmp_path).import_errors) == [str(tmp_path / "broken.py")]
