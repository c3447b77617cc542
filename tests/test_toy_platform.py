"""A platform is one folder and one ``register`` call: the toy platform of ``tests/toy_platform/``, outside the
package, passes the whole platform contract once registered, and the four platforms of the package still do.

The contract runs in its own pytest session, so the toy is registered before anything is collected or
served: its tests are collected with everyone else's, its routes served by that session's emulator, and its
tasks run in that session's ``airflow dags test``. This session's registry stays as the package has it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from airflow_flowruns.platforms import registered
from support.airflow import ROOT

REGISTER_THEN_TEST = """
import sys

import pytest

from airflow_flowruns.platforms import register
from toy_platform import FACTS

register(FACTS)
sys.exit(pytest.main(["-v", "-p", "no:cacheprovider", "tests/test_contract.py"]))
"""
PASSED = re.compile(r"^tests/test_contract\.py::(\w+)\[(\w+)[^\]]*\] PASSED", re.MULTILINE)


@pytest.mark.integration
def test_the_toy_platform_passes_the_contract_once_registered() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    done = subprocess.run(
        [sys.executable, "-c", REGISTER_THEN_TEST], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    passed: dict[str, set[str]] = {}
    for test, platform in PASSED.findall(done.stdout):
        passed.setdefault(platform, set()).add(test)
    assert passed["toy"] and passed["toy"] == passed["tableflow"], "every check a platform of the package passes"
    assert set(passed) - {"toy"} == {facts.name for facts in registered()}, "the toy is registered there only"
    assert "test_a_deferrable_dag_runs_a_task_on_every_platform PASSED" in done.stdout
