"""The package keeps its shape: small modules and functions, one folder per platform, the registry as the only
list of platforms, and an HTTP client that works without an Airflow connection or task."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from airflow_flowruns.client import FlowRunsClient, HttpOptions
from airflow_flowruns.platforms import PLATFORMS, registered
from airflow_flowruns.platforms.base import ConnectionSettings, RunQuery
from support.emulator import API_KEY, Emulator

PACKAGE = Path(__file__).resolve().parents[1] / "airflow_flowruns"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
PLATFORM_FOLDER_FILES = {"__init__.py", "api.py", "outputs.py", "changes.py", "emulator.py"}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_over_the_size_limit() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n for p in modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}, f"split these modules (over {MAX_MODULE_LINES} lines)"


def test_no_function_is_over_the_size_limit() -> None:
    long = {
        f"{path.relative_to(PACKAGE)}:{node.name}": length
        for path in modules()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (length := (node.end_lineno or node.lineno) - node.lineno + 1) > MAX_FUNCTION_LINES
    }
    assert long == {}, f"split these functions (over {MAX_FUNCTION_LINES} lines, docstring included)"


def test_no_docstring_uses_a_sphinx_role() -> None:
    """The API reference renders docstrings as Markdown, where ``:class:`X``` shows as written; a name in double
    backticks shows as code."""
    role = re.compile(r":(?:class|func|meth|attr|data|mod|exc|obj|const):`")
    found = [
        f"{p.relative_to(PACKAGE)}:{n}"
        for p in modules()
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if role.search(line)
    ]
    assert found == [], "write these names in double backticks"


@pytest.mark.parametrize("facts", registered(), ids=lambda facts: facts.name)
def test_each_platform_is_one_folder_with_the_modules_the_registry_finds(facts: object) -> None:
    name = getattr(facts, "name", "")
    folder = PACKAGE / "platforms" / name
    assert {p.name for p in folder.glob("*.py")} >= PLATFORM_FOLDER_FILES
    assert PLATFORMS[name].facts is facts


def imported_platform_folders(path: Path) -> set[str]:
    """The platform folders a module imports from, in either spelling (``from ...platforms import tableflow``,
    ``from ...platforms.tableflow.api import ...``)."""
    names = {facts.name for facts in registered()}
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "airflow_flowruns.platforms":
            found |= names & {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("airflow_flowruns.platforms."):
            found |= names & {(node.module or "").split(".")[2]}
    return found


def test_no_module_outside_the_platform_folders_imports_a_platform() -> None:
    """Adding a platform is its folder and one registry line: nothing else imports a platform's modules."""
    outside = {
        str(path.relative_to(PACKAGE)): folders
        for path in modules()
        if path.parent.parent != PACKAGE / "platforms" and (folders := imported_platform_folders(path))
    }
    assert outside == {"platforms/__init__.py": {facts.name for facts in registered()}}, "only the registry lists them"


def test_the_client_works_with_no_airflow_connection_or_task(emulator: Emulator) -> None:
    """The HTTP engine takes a platform and its options, not an Airflow connection: usable from any program."""
    platform = PLATFORMS["tableflow"](ConnectionSettings("plain", API_KEY, f"{emulator.url}/v2"))
    client = FlowRunsClient(platform, HttpOptions())
    try:
        assert list(client.iter_runs(RunQuery())) == []
        assert client.call(platform.test_call())
    finally:
        client.close()
