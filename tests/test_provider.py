"""The package registers as an Airflow provider with its connection types."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from airflow_flowruns.get_provider_info import get_provider_info
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms import PLATFORMS

AIRFLOW = str(Path(sys.executable).parent / "airflow")


def test_airflow_lists_the_provider_and_its_connection_types() -> None:
    providers = subprocess.run([AIRFLOW, "providers", "list", "-o", "plain"], capture_output=True, text=True)
    assert "airflow-flowruns" in providers.stdout
    hooks = subprocess.run([AIRFLOW, "providers", "hooks", "-o", "plain"], capture_output=True, text=True)
    for conn_type in PLATFORMS:
        assert conn_type in hooks.stdout


def test_every_platform_has_a_registered_hook_for_its_connection_type() -> None:
    registered = {
        entry["connection-type"]: entry["hook-class-name"] for entry in get_provider_info()["connection-types"]
    }
    assert set(registered) == set(PLATFORMS)
    for conn_type, class_path in registered.items():
        module, name = class_path.rsplit(".", 1)
        hook = getattr(__import__(module, fromlist=[name]), name)
        assert issubclass(hook, FlowRunsHook) and hook.conn_type == conn_type


def test_one_integration_per_platform_each_with_every_module() -> None:
    info = get_provider_info()
    labels = {platform.label for platform in PLATFORMS.values()}
    assert {entry["integration-name"] for entry in info["integrations"]} == labels
    for section in ("operators", "sensors", "hooks", "triggers"):
        assert {entry["integration-name"] for entry in info[section]} == labels, section
