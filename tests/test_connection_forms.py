"""Each platform's connection form in the Airflow UI, and `airflow connections test` against the emulator.

What every platform's form and hook show alike, and its connection test, are the platform contract's
(``tests/test_contract.py``); these check what Airflow's UI makes of them, and each platform's own fields.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pytest
from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

from airflow_flowruns.client import HttpOptions
from airflow_flowruns.connection_forms import ExtraField
from airflow_flowruns.get_provider_info import get_provider_info
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.platforms import PLATFORMS, registered
from airflow_flowruns.platforms.extend import api as extend
from airflow_flowruns.platforms.noxus import api as noxus
from airflow_flowruns.platforms.stackai import api as stackai
from airflow_flowruns.platforms.stackai.emulator import STACKAI_FLOW, STACKAI_ORG
from airflow_flowruns.platforms.tableflow import api as tableflow
from airflow_flowruns.version_compat import AIRFLOW_V_3_2_PLUS, AIRFLOW_V_3_3_PLUS
from support.airflow import AIRFLOW, airflow_env
from support.emulator import API_KEY, Emulator

FORMS = {facts.name: facts.form for facts in registered()}


def hook_classes() -> dict[str, type[FlowRunsHook]]:
    hooks = {}
    for entry in get_provider_info()["connection-types"]:
        module, name = entry["hook-class-name"].rsplit(".", 1)
        hooks[entry["connection-type"]] = getattr(__import__(module, fromlist=[name]), name)
    return hooks


def test_the_ui_of_this_airflow_shows_each_platforms_fields() -> None:
    """The connection-form metadata Airflow's own UI API serves, built from the provider info."""
    served = {meta.connection_type: meta for meta in HookMetaService.hook_meta_data()}
    for conn_type, form in FORMS.items():
        if conn_type not in PLATFORMS:
            continue
        meta = served[conn_type]
        assert meta.hook_name == form.label
        standard = meta.standard_fields
        assert standard is not None and standard.host is not None and standard.password is not None
        assert (standard.host.title, standard.host.placeholder) == (
            "API base URL (optional)",
            PLATFORMS[conn_type].default_base_url,
        )
        assert standard.password.title is not None and standard.password.title.startswith("API key")
        assert standard.port is not None and standard.port.hidden
        assert standard.url_schema is not None and standard.url_schema.hidden
        assert meta.extra_fields is not None
        assert {name: field["schema"]["title"] for name, field in meta.extra_fields.items()} == {
            f.name: f.label for f in form.extras
        }
        # The form fills each field with its default: Airflow 3.3 shows no placeholders for extra fields.
        assert {name: field["value"] for name, field in meta.extra_fields.items()} == {
            f.name: expected_default(f) for f in form.extras
        }
        assert meta.extra_fields["verify"]["schema"]["type"][0] == "boolean"


def expected_default(field: ExtraField) -> object:
    """What the form is filled with: Airflow before 3.2 reads WTForms fields, which have no float field."""
    if AIRFLOW_V_3_2_PLUS or field.type != "number" or field.default is None:
        return field.default
    return str(field.default)


def test_login_is_shown_only_where_the_platform_uses_it() -> None:
    hidden = {conn_type: "login" in form.hidden for conn_type, form in FORMS.items()}
    assert hidden == {"tableflow": True, "extend": True, "noxus": True, "stackai": False}


def test_older_uis_get_the_same_fields_from_the_hook_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook methods, read with the WTForms stand-ins Airflow's UI API itself uses when FAB is absent."""
    stand_ins = {
        name: MagicMock()
        for name in (
            "wtforms",
            "wtforms.validators",
            "flask_babel",
            "flask_appbuilder",
            "flask_appbuilder.fieldwidgets",
        )
    }
    for name, module in stand_ins.items():
        monkeypatch.setitem(sys.modules, name, module)
    stand_ins["wtforms"].StringField = HookMetaService.MockStringField
    stand_ins["wtforms"].IntegerField = HookMetaService.MockIntegerField
    stand_ins["wtforms"].BooleanField = HookMetaService.MockBooleanField
    stand_ins["wtforms.validators"].Optional = HookMetaService.MockOptional
    stand_ins["flask_babel"].lazy_gettext = str
    stand_ins["flask_appbuilder.fieldwidgets"].BS3TextFieldWidget = HookMetaService.MockAnyWidget

    for conn_type, hook in hook_classes().items():
        entry = next(e for e in get_provider_info()["connection-types"] if e["connection-type"] == conn_type)
        widgets = {name: widget.param.dump() for name, widget in hook.get_connection_form_widgets().items()}
        # no float field in WTForms
        expected_types = {"integer": "integer", "number": "string", "string": "string", "boolean": "boolean"}
        assert {name: (w["schema"]["title"], w["description"]) for name, w in widgets.items()} == {
            name: (f["label"], f["description"]) for name, f in entry["conn-fields"].items()
        }
        assert {name: w["schema"]["type"][0] for name, w in widgets.items()} == {
            name: expected_types[f["schema"]["type"][0]] for name, f in entry["conn-fields"].items()
        }
        assert {name: w["value"] for name, w in widgets.items()} == {
            f.name: (str(f.default) if f.type == "number" and f.default is not None else f.default)
            for f in FORMS[conn_type].extras
        }
        behaviour = entry["ui-field-behaviour"]
        assert hook.get_ui_field_behaviour() == {
            "hidden_fields": behaviour["hidden-fields"],
            "relabeling": behaviour["relabeling"],
            "placeholders": behaviour["placeholders"],
        }


def test_the_forms_defaults_are_the_ones_the_code_applies() -> None:
    options = HttpOptions()
    defaults = {f.name: getattr(options, f.name) for f in fields(HttpOptions)}
    for form in FORMS.values():
        for extra in form.extras:
            if extra.name in defaults:
                assert extra.default == defaults[extra.name], extra
    extras = {conn_type: {f.name: f.default for f in form.extras} for conn_type, form in FORMS.items()}
    assert extras["tableflow"]["run_url_template"] == tableflow.DEFAULT_RUN_URL_TEMPLATE
    assert extras["noxus"]["run_url_template"] == noxus.DEFAULT_RUN_URL_TEMPLATE
    assert extras["extend"]["api_version"] == extend.API_VERSION
    assert extras["stackai"]["run_timeout"] == stackai.DEFAULT_RUN_TIMEOUT
    assert extras["stackai"]["page_size"] == stackai.PAGE_SIZE


def test_a_stackai_connection_made_in_its_form_passes_the_test_button(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the form saves: every field at its default, the organization and the test's flow typed in. StackAI
    has no call that lists flows, so the test lists runs of the flow typed into the form."""
    typed = {"org_id": STACKAI_ORG, "flow_id": STACKAI_FLOW}
    form = FORMS["stackai"]
    extra = {f.name: typed.get(f.name, f.default) for f in form.extras if f.name in typed or f.default is not None}
    conn = {"conn_type": "stackai", "password": API_KEY, "host": emulator.url, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_STACKAI_FORM", json.dumps(conn))
    assert FlowRunsHook("stackai_form").test_connection() == (True, f"Connected to StackAI at {emulator.url}.")
    assert [(r["path"], r["status"]) for r in emulator.requests()] == [
        (f"/analytics/org/{STACKAI_ORG}/flows/{STACKAI_FLOW}", 200)
    ]


def test_every_client_setting_the_form_offers_is_one_the_client_reads() -> None:
    client = {f.name for f in fields(HttpOptions)}
    offered = {f.name for f in FORMS["tableflow"].extras} - {"run_url_template"}
    assert offered - {"max_requests_per_second"} <= client


def connections_test(home: Path, conn: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    env = airflow_env(home, AIRFLOW__CORE__TEST_CONNECTION="Enabled", AIRFLOW_CONN_FLOWRUNS_UI=json.dumps(conn))
    return subprocess.run(
        [AIRFLOW, "connections", "test", "flowruns_ui"], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.integration
def test_airflow_connections_test_succeeds_and_names_a_bad_key(airflow_home: Path, emulator: Emulator) -> None:
    conn = {"conn_type": "tableflow", "password": API_KEY, "host": emulator.url}
    ok = connections_test(airflow_home, conn)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Connection success!" in ok.stdout

    bad = connections_test(airflow_home, {**conn, "password": "not-the-key", "extra": {"max_retries": 0}})
    assert bad.returncode == (1 if AIRFLOW_V_3_3_PLUS else 0)  # the CLI exits 0 after a failed test before 3.3
    assert "Connection failed!" in bad.stdout
    assert "TableFlow API call 'list flows' failed (HTTP 401)" in bad.stdout
    assert "Check the API key in the connection's password field" in bad.stdout
    assert "not-the-key" not in bad.stdout + bad.stderr
    assert [r["status"] for r in emulator.requests() if r["path"].endswith("/v2/flows")] == [200, 401]
