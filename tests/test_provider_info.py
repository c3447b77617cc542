"""The provider info validates against Airflow's own schemas, and Airflow finds everything it registers."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import airflow
import jsonschema
import pytest
from airflow.configuration import conf
from airflow.providers_manager import ProvidersManager

from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.get_provider_info import DEFAULT_MIN_POLL_INTERVAL, get_provider_info
from airflow_flowruns.version_compat import AIRFLOW_V_3_2_PLUS
from airflow_flowruns.waiting import check_poll_interval

SCHEMAS = Path(airflow.__file__).parent


def schema(name: str) -> dict:
    return json.loads((SCHEMAS / name).read_text())


def test_provider_info_validates_against_airflows_runtime_schema() -> None:
    jsonschema.validate(get_provider_info(), schema("provider_info.schema.json"))


def test_connection_forms_validate_against_the_provider_yaml_schema() -> None:
    """The runtime schema does not describe conn-fields; provider.yaml's schema does, strictly."""
    connection_type = schema("provider.yaml.schema.json")["properties"]["connection-types"]
    jsonschema.validate(get_provider_info()["connection-types"], connection_type)
    for entry in get_provider_info()["connection-types"]:
        assert entry["conn-fields"] and entry["ui-field-behaviour"]["hidden-fields"], entry


@pytest.mark.skipif(not AIRFLOW_V_3_2_PLUS, reason="provider.yaml's schema describes conn-fields from Airflow 3.2")
def test_a_schema_violation_is_caught() -> None:
    """The validation above can fail: a conn-field without a schema is refused."""
    broken = get_provider_info()["connection-types"]
    broken[0]["conn-fields"]["timeout"].pop("schema")
    connection_type = schema("provider.yaml.schema.json")["properties"]["connection-types"]
    with pytest.raises(jsonschema.ValidationError, match="'schema' is a required property"):
        jsonschema.validate(broken, connection_type)


def test_every_registered_class_imports() -> None:
    info = get_provider_info()
    paths = [entry["hook-class-name"] for entry in info["connection-types"]] + info["extra-links"]
    for path in paths:
        module, name = path.rsplit(".", 1)
        assert hasattr(import_module(module), name), path
    for section in ("operators", "sensors", "hooks", "triggers"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                import_module(module)


def test_airflow_registers_the_extra_link() -> None:
    assert "airflow_flowruns.links.FlowRunLink" in ProvidersManager().extra_links_class_names


@pytest.mark.integration
def test_provider_info_loads_nothing_from_airflow() -> None:
    """Airflow calls get_provider_info while importing itself: importing Airflow back would be circular."""
    code = (
        "import sys, airflow_flowruns.get_provider_info as p; p.get_provider_info(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'airflow'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_airflow_knows_the_providers_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """``[flowruns] min_poll_interval`` is declared: Airflow gives its default with no fallback, with its
    description, and setting it moves the floor ``poll_interval`` is checked against."""
    declared = {package: section for package, section in ProvidersManager().provider_configs}
    option = declared["airflow-flowruns"]["flowruns"]["options"]["min_poll_interval"]
    assert option["type"] == "float" and option["description"] and option["example"]
    monkeypatch.delenv("AIRFLOW__FLOWRUNS__MIN_POLL_INTERVAL")  # the suite's own, lowered for fast tests
    assert conf.getfloat("flowruns", "min_poll_interval") == DEFAULT_MIN_POLL_INTERVAL == float(option["default"])
    monkeypatch.setenv("AIRFLOW__FLOWRUNS__MIN_POLL_INTERVAL", "10")
    with pytest.raises(FlowRunsConfigError, match="at least 10 s"):
        check_poll_interval(5)
    assert check_poll_interval(10) == 10.0
