"""`make compat`: the compatibility subset of the tests on every supported Airflow line and Python.

Each environment is a virtualenv of its own under ``.venv-compat/`` holding the latest patch of one Airflow
minor line and the test tools, then this package (editable) on top, which brings only what it needs newer
(the common.compat provider). Airflow asks users to install it with the constraint file of its release,
which is not on the package index, so each environment says how its dependencies are chosen:

- ``newest``: the newest release of everything, less the ``pins`` an environment names: Airflow 3.1.8 works
  with them but for cryptography 51, whose ``MultiFernet`` Airflow 3.1 cannot mark as encrypted, so its first
  deferral fails inside Airflow (``cryptography<51`` is the pin that makes 3.1 work); the ``unpinned`` 3.1
  environment checks that without the pin a deferrable task fails before it starts a run, naming the pin;
- ``at-release``: packages uploaded before the Airflow release plus a day (``pip --uploaded-prior-to``),
  which is what its constraint file held; Airflow 3.2.2 fails in ``airflow dags test`` with the FastAPI,
  Cadwyn and svcs releases that came after it;
- ``constraints.txt``: the versions ``make test`` runs Airflow 3.3 with, on another Python.

The subset covers what breaks first on another Airflow or Python: every registered class imports and
Airflow finds the provider, the connection forms as Airflow's UI API serves them, the example DAGs load
and one runs with ``airflow dags test`` against the emulator, the trigger's round trip, the features
that switch off on older Airflow, the asset watcher without a state store (what a restart does
there), and review in Airflow under ``airflow dags test`` (Required Actions came with 3.1; below 3.3 the
trigger reads the answer itself). Airflow 3.3 on Python 3.11 is ``.venv``, which ``make test`` tests whole.

A Python that the machine does not have is skipped with a message, never downloaded; only a failed
environment makes the exit code non-zero. ``--only NAME`` (repeatable) runs some of them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / ".venv-compat"

TEST_REQUIREMENTS = ("pytest>=8", "pytest-mock>=3.12", "jsonschema>=4")
SUBSET = (
    "tests/test_provider_info.py",
    "tests/test_connection_forms.py",
    "tests/test_dag_integrity.py",
    "tests/test_example_dags.py",
    "tests/test_trigger.py",
    "tests/test_version_compat.py",
    "tests/test_watcher_without_store.py",
    "tests/test_batch_operator.py",
    "tests/test_review_dags.py",
)


@dataclass(frozen=True)
class Environment:
    python: str
    airflow: str
    dependencies: Literal["newest", "at-release", "constraints.txt"]
    pins: tuple[str, ...] = ()
    """Requirements installed with Airflow that hold back a release that line cannot run with."""
    variant: str = ""
    """Tells apart two environments of one Airflow line and Python."""
    tests: tuple[str, ...] = SUBSET

    @property
    def name(self) -> str:
        return f"airflow-{self.airflow}-python-{self.python}" + (f"-{self.variant}" if self.variant else "")


# Keep the classifiers in pyproject.toml and the table in docs/install.md naming exactly these and .venv's.
ENVIRONMENTS = (
    Environment(python="3.11", airflow="3.1", dependencies="newest", pins=("cryptography<51",)),
    # As a user installs it without the pin: a deferrable task fails before it starts a run, naming the pin.
    Environment(
        python="3.11",
        airflow="3.1",
        dependencies="newest",
        variant="unpinned",
        tests=("tests/test_version_compat.py",),
    ),
    Environment(python="3.11", airflow="3.2", dependencies="at-release"),
    Environment(python="3.12", airflow="3.3", dependencies="constraints.txt"),
    Environment(python="3.13", airflow="3.3", dependencies="constraints.txt"),
)


def find_python(version: str) -> str | None:
    """The newest pyenv build of ``version``, else ``pythonX.Y`` on PATH (not a pyenv shim); never downloaded."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    builds = sorted(
        pyenv.glob(f"{version}.*/bin/python{version}"),
        key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.parent.name)],
    )
    if builds:
        return str(builds[-1])
    on_path = shutil.which(f"python{version}")
    return on_path if on_path and "/shims/" not in on_path else None


def latest_release(line: str) -> tuple[str, datetime]:
    """The newest final release of an Airflow minor line and when it was uploaded, from PyPI's JSON index."""
    request = urllib.request.Request(
        "https://pypi.org/simple/apache-airflow/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        index = json.load(response)
    uploaded: dict[tuple[int, ...], str] = {}
    for file in index["files"]:
        found = re.match(rf"apache_airflow-({re.escape(line)}\.\d+)(-py3|\.tar\.gz)", file["filename"])
        if found and not file.get("yanked"):
            version = tuple(int(n) for n in found.group(1).split("."))
            uploaded[version] = min(uploaded.get(version, file["upload-time"]), file["upload-time"])
    newest = max(uploaded)
    return ".".join(map(str, newest)), datetime.fromisoformat(uploaded[newest].replace("Z", "+00:00"))


def pinning(env: Environment, uploaded: datetime) -> list[str]:
    """The pip options that choose the environment's dependency versions (see the module docstring)."""
    if env.dependencies == "at-release":
        return ["--uploaded-prior-to", (uploaded + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")]
    if env.dependencies == "constraints.txt":
        return ["-c", str(ROOT / "constraints.txt")]
    return []


def install(env: Environment, python: str) -> Path:
    """Create the environment's virtualenv, again only when what it should hold has changed."""
    venv = VENVS / env.name
    version, uploaded = latest_release(env.airflow)
    airflow = [*pinning(env, uploaded), f"apache-airflow=={version}", *env.pins, *TEST_REQUIREMENTS]
    pins = (ROOT / "constraints.txt").read_text() if env.dependencies == "constraints.txt" else ""
    stamp = hashlib.sha256("\n".join([*airflow, pins, (ROOT / "pyproject.toml").read_text()]).encode()).hexdigest()
    marker = venv / ".installed"
    if marker.is_file() and marker.read_text() == stamp:
        return venv
    shutil.rmtree(venv, ignore_errors=True)  # a fresh one: pip would keep newer packages already there
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip>=26"], check=True)  # --uploaded-prior-to
    subprocess.run([*pip, *airflow], check=True)
    provider = pinning(env, uploaded) if env.dependencies == "constraints.txt" else []
    subprocess.run([*pip, *provider, "-e", str(ROOT)], check=True)
    marker.write_text(stamp)
    return venv


def versions(venv: Path) -> str:
    code = "import sys, airflow; print(f'Python {sys.version.split()[0]}, Airflow {airflow.__version__}')"
    env = {**os.environ, "AIRFLOW_HOME": str(venv / "airflow-home")}
    return subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout.strip()


def run(env: Environment) -> tuple[str, str]:
    """Install and test one environment: its outcome (passed, FAILED, skipped) and what it ran on."""
    python = find_python(env.python)
    if python is None:
        return "skipped", (
            f"no Python {env.python} interpreter on this machine (looked for python{env.python} on PATH and "
            f"in ~/.pyenv/versions); install one to test this line"
        )
    print(f"\n=== {env.name}: installing ({python})", flush=True)
    try:
        venv = install(env, python)
    except (subprocess.CalledProcessError, OSError) as exc:
        return "FAILED", f"could not install: {exc}"
    ran_on = versions(venv)
    print(f"=== {env.name}: {ran_on}, running {len(env.tests)} test modules", flush=True)
    pytest = [str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", *env.tests]
    done = subprocess.run(pytest, cwd=ROOT, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    return ("passed" if done.returncode == 0 else "FAILED"), ran_on


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=[e.name for e in ENVIRONMENTS], help="run just this one")
    args = parser.parse_args()
    chosen = [e for e in ENVIRONMENTS if not args.only or e.name in args.only]
    results = []
    for env in chosen:
        started = time.monotonic()
        outcome, detail = run(env)
        results.append((env.name, outcome, detail, time.monotonic() - started))
    print("\nmake compat:")
    for name, outcome, detail, seconds in results:
        print(f"  {name:<37} {outcome:<8} {seconds:6.0f} s  {detail}")
    return 1 if any(outcome == "FAILED" for _, outcome, _, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main())
