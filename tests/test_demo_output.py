"""What `make demo` prints (scripts/demo.py): task state changes as Airflow records them, XCom without Airflow's
and the provider's internal keys and with long values cut, and next steps naming files and commands that exist."""

from __future__ import annotations

import importlib.util
import json
import re
import sqlite3
import sys
from contextlib import closing
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_demo() -> ModuleType:
    """scripts/demo.py, a script rather than a module of a package (mypy checks it as ``demo``)."""
    spec = importlib.util.spec_from_file_location("flowruns_demo_script", ROOT / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


demo = load_demo()


def test_internal_xcom_keys_are_left_out() -> None:
    url = json.dumps("http://127.0.0.1:8765/v2/flows/runs/nKFqwOdQIoIEBM8C")
    rows = [("_link_FlowRunLink", url), ("flow_run_id", json.dumps("nKFqwOdQIoIEBM8C")), ("flow_run_url", url)]

    report = "\n".join(demo.xcom_report("reconcile", rows))

    assert "_link_FlowRunLink" not in report
    assert "flow_run_id" in report and "flow_run_url" in report
    assert report.splitlines()[0].startswith("XCom the task `reconcile` pushed")


def test_a_long_value_is_cut_to_the_width_and_says_how_long_it_was() -> None:
    value = {"comment": "x" * 500}

    text = demo.shortened(value)

    assert len(text) == demo.VALUE_WIDTH
    assert text.endswith(f"... ({len(json.dumps(value))} characters)")
    assert demo.shortened("short") == '"short"'


def test_a_dictionary_is_one_field_a_line_with_its_null_fields_named_on_one_line() -> None:
    run = {"id": "r1", "state": "succeeded", "metadata": {"note": "y" * 200}, "error": None, "usage": None}

    lines = demo.xcom_lines("return_value", run)

    assert lines[0] == "  return_value   what the task returned, 5 fields:"
    assert [line.split()[0] for line in lines[1:]] == ["id", "state", "metadata", "(null)"]
    assert lines[-1].split(maxsplit=1)[1] == "error, usage"
    assert all(len(line) <= 4 + len("metadata") + 2 + demo.VALUE_WIDTH for line in lines)


def test_a_dictionary_of_many_fields_prints_the_first_ones_and_counts_the_rest() -> None:
    lines = demo.xcom_lines("big", {f"field_{n}": n for n in range(demo.MAX_FIELDS + 3)})

    assert len(lines) == 1 + demo.MAX_FIELDS + 1
    assert lines[-1].strip() == "... and 3 more fields"


def airflow_db(path: Path) -> Path:
    """The two tables of Airflow's database the demo follows a run in, with their columns the demo reads."""
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE dag_run (id INTEGER PRIMARY KEY, dag_id, run_id, state, start_date, end_date)")
        conn.execute("CREATE TABLE task_instance (dag_id, run_id, task_id, map_index, state)")
    return path


def set_states(db: Path, states: dict[tuple[str, int], str | None]) -> None:
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DELETE FROM task_instance")
        conn.executemany(
            "INSERT INTO task_instance VALUES ('d', 'manual__1', ?, ?, ?)",
            [(task_id, map_index, state) for (task_id, map_index), state in states.items()],
        )


def progress(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The progress lines printed, without their elapsed-seconds prefix."""
    return [re.sub(r"^\[\s*[\d.]+s\]\s+", "", line) for line in capsys.readouterr().out.splitlines()]


def test_each_task_state_change_is_reported_once_and_the_way_to_running_is_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = airflow_db(tmp_path / "airflow.db")
    watcher = demo.RunWatcher(db, "d", demo.Clock())
    watcher.poll()  # no run yet
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("INSERT INTO dag_run VALUES (1, 'd', 'manual__1', 'running', '2026-01-01 00:00:00', NULL)")

    steps: list[dict[tuple[str, int], str | None]] = [
        {("reconcile", -1): None, ("extract", 0): None},
        {("reconcile", -1): "queued", ("extract", 0): "scheduled"},
        {("reconcile", -1): "running", ("extract", 0): "scheduled"},
        {("reconcile", -1): "deferred", ("extract", 0): "scheduled"},
        {("reconcile", -1): "deferred", ("extract", 0): "scheduled"},
        {("reconcile", -1): "success", ("extract", 0): "failed"},
    ]
    for states in steps:
        set_states(db, states)
        watcher.poll()

    assert progress(capsys) == [
        "DAG run manual__1 created",
        "reconcile              running",
        "reconcile              deferred" + demo.STATE_NOTES["deferred"],
        "reconcile              success",
        "extract[0]             failed",
    ]


def test_the_finished_run_has_its_state_and_seconds_from_start_to_end(tmp_path: Path) -> None:
    db = airflow_db(tmp_path / "airflow.db")
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "INSERT INTO dag_run VALUES (1, 'd', 'manual__1', 'failed', '2026-01-01 00:00:00', '2026-01-01 00:00:12.5')"
        )

    assert demo.RunWatcher(db, "d", demo.Clock()).finished_run() == ("manual__1", "failed", 12.5)
    assert demo.RunWatcher(db, "other", demo.Clock()).finished_run() is None


def test_next_steps_name_files_and_a_dag_that_exist() -> None:
    steps = "\n".join(demo.next_steps(ROOT / ".venv" / "bin", ROOT, ROOT))

    for named in ("docs/index.md", "docs/connections.md", "docs/howto", "example_dags/extend_invoice_extraction.py"):
        assert named in steps and (ROOT / named).exists(), named
    assert "\n       .venv/bin/flowruns-emulator\n" in steps
    (dag_id,) = re.findall(r"dags test (\w+)$", steps, re.MULTILINE)
    assert (ROOT / "example_dags" / f"{dag_id}.py").exists()
    assert f"AIRFLOW__CORE__DAGS_FOLDER={ROOT / 'example_dags'} " in steps, "Airflow needs the folder's absolute path"
    assert re.search(r"^docs:", (ROOT / "Makefile").read_text(), re.MULTILINE), "`make docs` is printed"


def test_next_steps_from_outside_the_clone_name_absolute_paths(tmp_path: Path) -> None:
    steps = "\n".join(demo.next_steps(ROOT / ".venv-dist" / "bin", ROOT, tmp_path))

    assert f"cd {ROOT} && make docs" in steps
    assert f"{ROOT}/.venv-dist/bin/airflow db migrate" in steps
    assert f"{ROOT}/docs/connections.md" in steps


@pytest.mark.parametrize("proxy", [None, "http://proxy.example:3128"])
def test_a_proxy_in_the_environment_gets_loopback_off_it(proxy: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    if proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy)

    steps = "\n".join(demo.next_steps(ROOT / ".venv" / "bin", ROOT, ROOT))

    assert ("NO_PROXY=" in steps) == bool(proxy)
