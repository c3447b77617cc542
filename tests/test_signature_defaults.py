"""The API reference renders each signature default as its source text, so the public signatures of the hooks,
operators, sensors and triggers write their defaults as values (``24 * 60 * 60``, ``"succeed"``), never as the name
of a constant; where a constant is the one source of that value, the value written out is checked against it."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

import airflow_flowruns
from airflow_flowruns.operators.batch import FlowRunBatchOperator
from airflow_flowruns.operators.flow_run import DEFAULT_TIMEOUT, FlowRunOperator
from airflow_flowruns.sensors.flow_run import FlowRunSensor
from airflow_flowruns.triggers.batch import FlowRunBatchTrigger
from airflow_flowruns.triggers.flow_run import FlowRunTrigger
from airflow_flowruns.waiting import OnReview

PACKAGE = Path(airflow_flowruns.__file__).parent
PUBLIC = ("hooks", "operators", "sensors", "triggers")
CONFIG_DEFAULT = "conf.getboolean("
"""A default read from Airflow's configuration (``deferrable``) has no value to show: its text names the option."""


def public_defaults() -> Iterator[tuple[str, str, ast.expr]]:
    """(where, parameter, default) for every default of a public function or method in the public packages."""
    for folder in PUBLIC:
        for path in sorted((PACKAGE / folder).glob("[!_]*.py")):
            for function in _public_functions(ast.parse(path.read_text())):
                yield from _defaults(f"{folder}/{path.name}:{function.lineno}", function.args)


def _public_functions(tree: ast.Module) -> Iterator[ast.FunctionDef]:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            yield from (item for item in node.body if isinstance(item, ast.FunctionDef) and _public(item.name))
        elif isinstance(node, ast.FunctionDef) and _public(node.name):
            yield node


def _public(name: str) -> bool:
    return name == "__init__" or not name.startswith("_")


def _defaults(where: str, args: ast.arguments) -> Iterator[tuple[str, str, ast.expr]]:
    positional = [*args.posonlyargs, *args.args]
    for arg, default in zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True):
        yield where, arg.arg, default
    for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        if kw_default is not None:
            yield where, arg.arg, kw_default


def is_value(node: ast.expr) -> bool:
    """A literal, a tuple or list of them, or arithmetic on numbers: text that reads as the value itself."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Tuple | ast.List):
        return all(is_value(item) for item in node.elts)
    if isinstance(node, ast.UnaryOp):
        return is_value(node.operand)
    if isinstance(node, ast.BinOp):
        return is_value(node.left) and is_value(node.right)
    return False


def test_every_public_default_is_written_as_its_value() -> None:
    named = [
        f"{where} {name}={ast.unparse(default)}"
        for where, name, default in public_defaults()
        if not is_value(default) and not ast.unparse(default).startswith(CONFIG_DEFAULT)
    ]
    assert named == [], "write these defaults as values, checked against their constant here if they have one"


@pytest.mark.parametrize("cls", [FlowRunOperator, FlowRunBatchOperator])
def test_the_timeout_written_out_is_the_default_timeout(cls: type) -> None:
    assert inspect.signature(cls).parameters["timeout"].default == DEFAULT_TIMEOUT


@pytest.mark.parametrize(
    "cls", [FlowRunOperator, FlowRunBatchOperator, FlowRunSensor, FlowRunTrigger, FlowRunBatchTrigger]
)
def test_the_review_policy_written_out_is_a_policy(cls: type) -> None:
    assert inspect.signature(cls).parameters["on_review"].default == OnReview.SUCCEED.value
