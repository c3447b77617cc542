"""The package registers as an Airflow provider with its connection types (what each registered platform's
provider-info entry holds is the platform contract's, ``tests/test_contract.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from airflow_flowruns.platforms import PLATFORMS

AIRFLOW = str(Path(sys.executable).parent / "airflow")


@pytest.mark.integration
def test_airflow_lists_the_provider_and_its_connection_types() -> None:
    providers = subprocess.run([AIRFLOW, "providers", "list", "-o", "plain"], capture_output=True, text=True)
    assert "airflow-flowruns" in providers.stdout
    hooks = subprocess.run([AIRFLOW, "providers", "hooks", "-o", "plain"], capture_output=True, text=True)
    for conn_type in PLATFORMS:
        assert conn_type in hooks.stdout
