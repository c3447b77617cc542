"""Part of `make dist`: what the built sdist and wheel in ``dist/`` carry, before the wheel is installed.

Both name this package's one version and the licence; the wheel registers the provider's entry point;
the sdist ships no test tree (the tests need the repository around them) and the example DAGs.
Exits non-zero, naming each problem, when any of that does not hold.
"""

from __future__ import annotations

import re
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"


def version() -> str:
    found = re.search(r'^__version__ = "([^"]+)"', (ROOT / "airflow_flowruns" / "__init__.py").read_text(), re.M)
    assert found, "airflow_flowruns/__init__.py sets no __version__"
    return found.group(1)


def problems() -> list[str]:
    wanted = version()
    wheels, sdists = sorted(DIST.glob("*.whl")), sorted(DIST.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        return [f"dist/ holds {len(wheels)} wheels and {len(sdists)} sdists, not one of each"]
    found: list[str] = []
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = wheel.namelist()
        info = f"airflow_flowruns-{wanted}.dist-info"
        metadata = Parser().parsestr(wheel.read(f"{info}/METADATA").decode())
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    if metadata["Version"] != wanted:
        found.append(f"the wheel's version is {metadata['Version']}, airflow_flowruns.__version__ is {wanted}")
    if f"{info}/licenses/LICENSE" not in names:
        found.append("the wheel carries no LICENSE")
    if "[apache_airflow_provider]" not in entry_points:
        found.append("the wheel registers no apache_airflow_provider entry point")
    if not any(c.startswith("Framework :: Apache Airflow :: Provider") for c in metadata.get_all("Classifier", [])):
        found.append("the wheel's classifiers do not name an Airflow provider")
    if any(not n.startswith(("airflow_flowruns/", info)) for n in names):
        found.append(f"the wheel holds files outside the package: {[n for n in names if '/' not in n]}")
    with tarfile.open(sdists[0]) as sdist:
        members = [m.split("/", 1)[1] for m in sdist.getnames() if "/" in m]
    if "LICENSE" not in members:
        found.append("the sdist carries no LICENSE")
    if any(m.startswith("tests/") for m in members):
        found.append("the sdist carries test files; it ships no test tree")
    if not any(m.startswith("example_dags/") for m in members):
        found.append("the sdist carries no example DAGs")
    return found


def main() -> int:
    found = problems()
    for problem in found:
        print(f"dist: {problem}")
    if not found:
        print(f"dist: sdist and wheel of airflow-flowruns {version()} carry what they should")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
