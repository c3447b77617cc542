"""The Python the README and the documentation show, as ``tests/test_docs_dags.py`` runs it.

Every ``--8<-- "example_dags/<file>.py"`` line (an included example DAG) and every ```` ```python ```` block of
``README.md`` and ``docs/**/*.md`` is one :class:`DocBlock`, of one kind:

- ``dag``: it defines a DAG (``DAG(...)``, ``with DAG``, ``@dag``) and runs as shown;
- ``fragment``: it builds the provider's operators or sensors without a DAG and runs inside a daily DAG the check
  wraps around it (``FRAGMENT_DAG_HEAD``), with the imports of the provider classes it names but does not
  import (the page shows them elsewhere);
- ``code``: any other Python (hook calls, imports, a task body): compiled, and each of its imports of
  ``airflow_flowruns`` must resolve;
- ``skip``: the line just above the block is ``<!-- docs-check: skip (reason) -->``; the reason is required;
- ``unreadable``: not Python and not marked, which fails the check.

A DAG whose run stops for a person in Airflow (``on_review="airflow"``) runs with the check as its reviewer:
its DAG file ends by loading ``support/dags_test_hitl.py`` (``HITL_SUPPORT``), which makes ``airflow dags
test`` serve Required Actions as a deployment does, and the check accepts each Required Action the run opens
("Accept the extraction", the parameters as shown; ``support/review_answers.py``). The pages' such DAGs send
an invoice to the emulator's ``workflow_invoice`` with ``review_below_confidence=0.9``, whose run succeeds with
a ``total`` of confidence 0.41: each opens one Required Action. A flow that never stops for review on the
emulator opens none, and the run just succeeds. A DAG scheduled on an asset watcher runs: ``airflow dags
test`` runs its tasks with no triggering events.

The pages' placeholder locations stand for a folder of the test's own, ``data``:

- a string starting ``/data`` or ``file:///data`` is re-rooted under it (``/data/po.pdf`` becomes
  ``{data}/data/po.pdf``), and ``s3://bucket/`` becomes ``file://{data}/bucket/``;
- an Airflow Variable the block reads without a default, or with a path default, is set to a folder named
  after it under ``data`` (``flowruns_data_dir`` is ``{data}/flowruns_data_dir``);
- each PDF the block names by absolute path is created there, and every PDF file name it names (``inv.pdf``;
  ``doc.pdf`` when it names none) in each Variable's folder, as a small PDF;
- a connection documented as ``AIRFLOW_CONN_<ID>='{...}'`` that is no platform's is set as documented.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
import re
import textwrap
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator

import airflow_flowruns.operators
import airflow_flowruns.sensors
from support.airflow import ROOT

FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
SNIPPET = re.compile(r'^\s*--8<--\s+"(?P<path>example_dags/[^"]+\.py)"\s*$')
MARKER = re.compile(r"^\s*<!--\s*docs-check:\s*skip\s*(?:\((?P<reason>[^)]*)\))?\s*-->\s*$")
PYTHON = frozenset({"python", "py", "python3"})
REVIEW_IN_AIRFLOW = re.compile(r"""on_review\s*=\s*["']airflow["']""")
HITL_SUPPORT = """

from support.dags_test_hitl import install

install()
"""
"""What the DAG file of a block that asks for review in Airflow ends with (``tests`` is on its ``PYTHONPATH``)."""
FRAGMENT_DAG_HEAD = """from datetime import datetime

from airflow.sdk import DAG

try:
    from airflow.sdk import CronDataIntervalTimetable
except ImportError:  # Airflow 3.1
    from airflow.timetables.interval import CronDataIntervalTimetable

DAILY = CronDataIntervalTimetable("@daily", timezone="UTC")"""
"""What a fragment's DAG starts with: a daily data-interval timetable, so a manual run covers the last whole day,
as an export needs (Airflow 3's manual runs of an unscheduled DAG cover no interval)."""
PDF = b"%PDF-1.4\n% a document the documentation names\n%%EOF\n"


def provider_classes() -> dict[str, str]:
    """The provider's public operators and sensors, by class name: the module each is imported from."""
    found = {}
    for package in (airflow_flowruns.operators, airflow_flowruns.sensors):
        for module_info in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
            if module_info.name.rsplit(".", 1)[-1].startswith("_"):
                continue
            module = importlib.import_module(module_info.name)
            for name, value in vars(module).items():
                if inspect.isclass(value) and issubclass(value, BaseOperator) and value.__module__ == module.__name__:
                    found[name] = module.__name__
    return found


PROVIDER_CLASSES = provider_classes()


@dataclass(frozen=True)
class DocBlock:
    """One block of Python a page shows: where, what it says, and the skip marker above it, if any."""

    page: str
    line: int
    source: str
    included: str | None = None
    """``example_dags/<file>.py`` for a snippet line, whose file is the block's source."""
    marker: str | None = None
    """The reason of the ``docs-check: skip`` marker above the block; ``""`` for a marker without one."""

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}" + (f"({self.included})" if self.included else "")

    @cached_property
    def tree(self) -> ast.Module | SyntaxError:
        try:
            return ast.parse(self.source)
        except SyntaxError as error:
            return error

    @cached_property
    def kind(self) -> str:
        if self.marker is not None:
            return "skip"
        if isinstance(self.tree, SyntaxError):
            return "unreadable"
        if defines_dag(self.tree):
            return "dag"
        return "fragment" if provider_calls(self.tree) else "code"

    @cached_property
    def dag_ids(self) -> list[str]:
        """The DAGs the block defines, or the one the check wraps around a fragment."""
        if self.kind == "fragment":
            page = self.page.removeprefix("docs/").removesuffix(".md")
            return ["docs_" + re.sub(r"\W+", "_", f"{page}_{self.line}").strip("_").lower()]
        if self.kind != "dag":
            return []
        assert isinstance(self.tree, ast.Module)
        return dag_ids(self.tree)

    @property
    def asks_in_airflow(self) -> bool:
        """Whether a run in review becomes a Required Action, which the check answers."""
        return bool(REVIEW_IN_AIRFLOW.search(self.source))

    @property
    def problem(self) -> str | None:
        """What makes the block fail the check before anything runs."""
        if self.marker == "":
            return f"{self.id}: the docs-check skip marker above the block names no reason: (reason) is required"
        if self.kind == "unreadable":
            return (
                f"{self.id}: not Python ({self.tree}); make it runnable, or mark it with "
                "<!-- docs-check: skip (why it cannot run) --> on the line above"
            )
        if self.kind == "dag" and not self.dag_ids:
            return f"{self.id}: defines a DAG whose id the check cannot read: give DAG(...) a literal dag_id"
        return None

    def dag_file(self, data: Path) -> str:
        """The DAG file the check runs: the block with its paths re-rooted under ``data``, wrapped in a DAG if
        it is a fragment, ending with ``HITL_SUPPORT`` if it asks for review in Airflow."""
        return self.dag_text(data) + (HITL_SUPPORT if self.asks_in_airflow else "")

    def dag_text(self, data: Path) -> str:
        text = rewrite_paths(self.source, data)
        if self.kind != "fragment":
            return text
        assert isinstance(self.tree, ast.Module)
        imports = [f"from {PROVIDER_CLASSES[name]} import {name}" for name in missing_imports(self.tree)]
        return "\n".join(
            [
                FRAGMENT_DAG_HEAD,
                *imports,
                "",
                f"with DAG({self.dag_ids[0]!r}, schedule=DAILY, start_date=datetime(2026, 1, 1), catchup=False):",
                textwrap.indent(text, "    "),
            ]
        )


def collect(root: Path = ROOT) -> list[DocBlock]:
    """Every block of Python ``README.md`` and ``docs/**/*.md`` show, in page order."""
    pages = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    return [block for page in pages for block in page_blocks(root, page)]


def page_blocks(root: Path, page: Path) -> list[DocBlock]:
    lines = page.read_text().splitlines()
    name = page.relative_to(root).as_posix()
    blocks, index = [], 0
    while index < len(lines):
        opened = FENCE.match(lines[index])
        if not opened:
            index += 1
            continue
        end = next(
            (n for n in range(index + 1, len(lines)) if lines[n].strip().startswith(opened["fence"])), len(lines)
        )
        if opened["lang"].lower() in PYTHON:
            body = textwrap.dedent("\n".join(lines[index + 1 : end]))
            blocks.append(python_block(root, name, index + 1, body, marker_above(lines, index)))
        index = end + 1
    return blocks


def python_block(root: Path, page: str, line: int, body: str, marker: str | None) -> DocBlock:
    """A fenced block: a snippet line's included file, or the code as shown."""
    included = SNIPPET.match(body.strip()) if body.strip().count("\n") == 0 else None
    if included:
        path = included["path"]
        return DocBlock(page, line, (root / path).read_text(), included=path, marker=marker)
    return DocBlock(page, line, body, marker=marker)


def marker_above(lines: list[str], fence: int) -> str | None:
    """The reason of a skip marker on the nearest non-blank line above the fence (``""`` when it has none)."""
    above = next((lines[n] for n in range(fence - 1, -1, -1) if lines[n].strip()), "")
    marked = MARKER.match(above)
    return None if marked is None else (marked["reason"] or "").strip()


def defines_dag(tree: ast.Module) -> bool:
    return bool(dag_ids(tree)) or any(called_name(node) == "DAG" for node in ast.walk(tree))


def dag_ids(tree: ast.Module) -> list[str]:
    """The ids of ``DAG("id", ...)`` calls and ``@dag`` functions (their ``dag_id`` or their name)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and called_name(node) == "DAG":
            found.append(literal_dag_id(node))
        elif isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                if decorator_name(decorator) == "dag":
                    named = literal_dag_id(decorator) if isinstance(decorator, ast.Call) else None
                    found.append(named or node.name)
    return [dag_id for dag_id in found if dag_id]


def literal_dag_id(call: ast.Call) -> str | None:
    given = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "dag_id"), None)
    return given.value if isinstance(given, ast.Constant) and isinstance(given.value, str) else None


def called_name(node: ast.AST) -> str | None:
    """The name a call is made through: ``X`` of ``X(...)``, ``X.partial(...)`` and ``module.X(...)``."""
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    if isinstance(func, ast.Attribute) and func.attr in ("partial", "expand"):
        func = func.value
    if isinstance(func, ast.Call):
        return called_name(func)
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def decorator_name(decorator: ast.expr) -> str | None:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return target.attr if isinstance(target, ast.Attribute) else target.id if isinstance(target, ast.Name) else None


def provider_calls(tree: ast.Module) -> set[str]:
    """The provider's operators and sensors the block builds."""
    return {name for node in ast.walk(tree) if (name := called_name(node)) in PROVIDER_CLASSES}


def missing_imports(tree: ast.Module) -> list[str]:
    """The provider classes a fragment uses without importing them."""
    imported = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for alias in node.names}  # fmt: skip
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    return sorted((used & PROVIDER_CLASSES.keys()) - imported)


def provider_imports(tree: ast.Module) -> list[tuple[str, str | None]]:
    """``(module, name)`` of each import of ``airflow_flowruns`` (name None for ``import module``)."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "airflow_flowruns":
            found += [(str(node.module), alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name.split(".")[0] == "airflow_flowruns"]
    return found


def rewrite_paths(text: str, data: Path) -> str:
    """The block's placeholder locations re-rooted under ``data`` (the module docstring has the rule)."""
    text = text.replace("s3://bucket/", f"file://{data}/bucket/")
    text = re.sub(r"file:///data\b", f"file://{data}/data", text)
    return re.sub(r"""(?<=["'])/data\b""", f"{data}/data", text)


def variables(text: str, data: Path) -> dict[str, str]:
    """``AIRFLOW_VAR_<NAME>`` for each Variable the (re-rooted) text reads without a default or with a path one:
    a folder under ``data`` named after it, as a ``file://`` URI when the default is one."""
    found = {}
    for name, default in re.findall(r"""var\.value\.get\(\s*["'](\w+)["']\s*,\s*["']([^"']*)["']""", text):
        if default.startswith(("/", "file://")):
            folder = data / name
            found[name] = folder.as_uri() if default.startswith("file://") else str(folder)
    for name in re.findall(r"var\.value\.(\w+)", text):
        if name != "get":
            found.setdefault(name, str(data / name))
    return {f"AIRFLOW_VAR_{name.upper()}": value for name, value in found.items()}


def make_documents(text: str, data: Path, folders: list[Path]) -> None:
    """Small PDFs wherever the (re-rooted) text names one, and in each Variable's folder."""
    (data / "data").mkdir(parents=True, exist_ok=True)
    for path in re.findall(re.escape(str(data)) + r"/[\w./-]+\.pdf\b", text):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(PDF)
    names = set(re.findall(r"[\w-][\w.-]*\.pdf\b", text)) or {"doc.pdf"}
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            (folder / name).write_bytes(PDF)


def connection_ids(text: str) -> set[str]:
    """The connection ids the block names: ``flowruns_conn_id="..."``, ``conn_id="..."`` and documented ones."""
    named = set(re.findall(r"""\b(?:flowruns_)?conn_id\s*=\s*["']([\w.-]+)["']""", text))
    return named | documented_connections(text).keys()


def documented_connections(text: str) -> dict[str, str]:
    """The connections the block documents as ``AIRFLOW_CONN_<ID>='<json>'``, by conn id."""
    found = re.findall(r"AIRFLOW_CONN_(\w+)='(\{.*?\})'", text, flags=re.DOTALL)
    return {conn_id.lower(): value for conn_id, value in found}


def platform_of(conn_id: str, text: str, platforms: dict[str, Any]) -> str | None:
    """The platform a conn id stands for: the one its id or its documented conn_type names, else the one that
    serves a flow id the block names; None when neither says."""
    documented = documented_connections(text).get(conn_id)
    if documented is not None and json.loads(documented).get("conn_type") in platforms:
        return str(json.loads(documented)["conn_type"])
    by_name = [name for name in platforms if name in conn_id.lower()]
    if by_name:
        return by_name[0]
    flows = set(re.findall(r"""flow_id\s*=\s*["']([^"']+)["']""", text))
    served = [name for name, platform in platforms.items() if flows & {flow["id"] for flow in platform["flows"]}]
    return served[0] if len(served) == 1 else None


def connections(text: str, platforms: dict[str, Any]) -> dict[str, str]:
    """``AIRFLOW_CONN_<ID>`` for each platform's default connection and each conn id the block names: the
    emulator's connection for the conn id's platform (``platforms`` is the discovery call's), or the
    documented connection of a conn id that is no platform's."""
    env = {platform["connection"]["env_var"]: platform["connection"]["json"] for platform in platforms.values()}
    for conn_id in connection_ids(text):
        platform = platform_of(conn_id, text, platforms)
        if platform is not None:
            env[f"AIRFLOW_CONN_{conn_id.upper()}"] = platforms[platform]["connection"]["json"]
        elif conn_id in documented_connections(text):
            env[f"AIRFLOW_CONN_{conn_id.upper()}"] = documented_connections(text)[conn_id]
        else:
            raise ValueError(
                f"connection {conn_id!r}: neither its id, a documented AIRFLOW_CONN_ line nor a flow id the block "
                "names says which platform it is on"
            )
    return env
