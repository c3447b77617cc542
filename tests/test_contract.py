"""The platform contract: what every registered platform does, checked the same way for each.

Parametrized over ``airflow_flowruns.platforms.registered()``, so a platform registered before the tests are
collected is checked too (``tests/test_toy_platform.py`` does that with a platform from outside the package).
What a platform's checks need to know of it is its row in ``tests/support/contract.py``.

On golden payloads (no server): runs and listing pages are read, every documented status maps to a state,
outputs are read; the connection form and the provider info show the platform's facts. Over HTTP against the
platform's emulator part: a run starts, reads back by id, lists on every page, is cancelled where the platform
can, has outputs once finished and a change time the asset watcher can use; the connection test passes and
names a bad key. Last, one deferrable DAG under ``airflow dags test`` runs a task on every platform.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest

from airflow_flowruns.emulator import EmulatorConfig
from airflow_flowruns.exceptions import FlowRunsConfigError, FlowRunsResponseError
from airflow_flowruns.get_provider_info import get_provider_info
from airflow_flowruns.hooks.flow_run import FlowRunsHook
from airflow_flowruns.outputs.model import KINDS, outputs_document
from airflow_flowruns.platforms import PLATFORMS, change_source, facts_of, output_reader, registered
from airflow_flowruns.platforms.base import ConnectionSettings, FlowRun, Platform, RunQuery, RunState
from airflow_flowruns.platforms.changes import NOT_FINAL
from support.airflow import ROOT, dags_test
from support.contract import connect, contract_of, read_until, seed, start
from support.emulator import API_KEY, Emulator, set_connection
from support.golden import golden
from support.runs import FLOW_RUN_XCOM_KEYS

NAMES = [facts.name for facts in registered()]
STATUS_CASES = [(name, raw) for name in NAMES for raw in contract_of(name).statuses]
FINAL = frozenset(state for state in RunState if state.is_final)
STANDARD_FIELDS = {"host", "schema", "port", "login", "password"}


def platform(name: str) -> Platform:
    cls = PLATFORMS[name]
    return cls(ConnectionSettings("contract", "key", cls.default_base_url, contract_of(name).extras))


def statuses(name: str) -> dict[str, RunState]:
    """The platform's own status map: its ``api`` module's ``STATUSES``."""
    mapping: dict[str, RunState] = facts_of(name).part("api", "STATUSES")
    return mapping


def check_run(name: str, run: FlowRun) -> None:
    """What every run of the platform is, however it was read."""
    assert run.platform == name and run.id
    assert run.state is statuses(name)[run.status]
    assert set(json.loads(json.dumps(run.to_xcom()))) == FLOW_RUN_XCOM_KEYS


# --- golden payloads, no server ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_golden_runs_are_read(name: str) -> None:
    for file in contract_of(name).runs:
        body = golden(name, file)
        run = platform(name).parse_run(body)
        check_run(name, run)
        assert run.raw == body, file
        output_reader(name).read(body)


@pytest.mark.parametrize("name", NAMES)
def test_a_succeeded_golden_run_has_its_outputs_read(name: str) -> None:
    bodies = [golden(name, file) for file in contract_of(name).runs]
    succeeded = [body for body in bodies if platform(name).parse_run(body).state is RunState.SUCCEEDED]
    assert succeeded, "the row names no succeeded golden run"
    for body in succeeded:
        read = output_reader(name).read(body)
        assert read.outputs and {output.kind for output in read.outputs} <= set(KINDS)


@pytest.mark.parametrize("name", NAMES)
def test_golden_listing_pages_are_read_with_the_call_for_the_next(name: str) -> None:
    query = RunQuery(flow_id=contract_of(name).flow_id)
    for page_file in contract_of(name).pages:
        call = platform(name).list_runs_call(query)
        page = platform(name).parse_runs_page(golden(name, page_file.file), call, query)
        assert len(page.runs) == len({run.id for run in page.runs}) == page_file.runs, page_file
        for run in page.runs:
            check_run(name, run)
        assert (page.next_call is not None) == page_file.more, page_file
        if page.next_call is not None:
            assert (page.next_call.method, page.next_call.path) == (call.method, call.path)
            assert page.next_call.params != call.params, "the next call asks for another page"


@pytest.mark.parametrize("name", NAMES)
def test_the_documented_statuses_are_the_ones_mapped_and_the_emulator_speaks(name: str) -> None:
    assert statuses(name) == dict(contract_of(name).statuses)
    emulated: dict[str, str] = facts_of(name).part("emulator", "STATUSES")
    assert set(emulated.values()) <= set(statuses(name)), "the emulator sends a status the platform does not document"


@pytest.mark.parametrize("name", NAMES)
def test_the_connection_form_shows_the_platforms_facts(name: str) -> None:
    facts = facts_of(name)
    form = facts.form
    assert form.label == facts.label
    assert dict(form.placeholders) == {"host": facts.default_base_url, "password": f"{facts.label} API key"}
    assert dict(form.relabeling) == dict(facts.relabeling) and {"host", "password"} <= set(facts.relabeling)
    assert set(form.hidden) == STANDARD_FIELDS - set(facts.relabeling)
    names = [extra.name for extra in form.extras]
    assert form.extras[: len(facts.extras)] == facts.extras and len(names) == len(set(names))


@pytest.mark.parametrize("name", NAMES)
def test_the_provider_info_registers_the_platforms_hook_and_integration(name: str) -> None:
    facts, info = facts_of(name), get_provider_info()
    (entry,) = [e for e in info["connection-types"] if e["connection-type"] == name]
    assert (entry["hook-name"], entry["hook-class-name"]) == (facts.label, facts.hook_class_name)
    module, class_name = facts.hook_class_name.rsplit(".", 1)
    hook = getattr(import_module(module), class_name)
    assert issubclass(hook, FlowRunsHook)
    assert (hook.conn_type, hook.hook_name, hook.default_conn_name) == (name, facts.label, facts.default_conn_id)
    # Airflow before 3.2 reads the form methods only from the class itself, never inherited.
    assert {"get_connection_form_widgets", "get_ui_field_behaviour"} <= set(vars(hook))
    behaviour = entry["ui-field-behaviour"]
    assert hook.get_ui_field_behaviour() == {key.replace("-", "_"): value for key, value in behaviour.items()}
    integration = {"integration-name": facts.label, "external-doc-url": facts.integration_url, "tags": ["service"]}
    assert integration in info["integrations"]


def test_the_provider_info_lists_exactly_the_registered_platforms() -> None:
    info = get_provider_info()
    assert [entry["connection-type"] for entry in info["connection-types"]] == NAMES
    labels = [facts.label for facts in registered()]
    for section in ("integrations", "operators", "sensors", "hooks", "triggers"):
        assert [entry["integration-name"] for entry in info[section]] == labels, section


@pytest.mark.parametrize("name", NAMES)
def test_the_change_source_refuses_exactly_the_states_it_cannot_time(name: str) -> None:
    source = change_source(name)
    assert source.order in ("updated", "created", "filtered", "none")
    assert source.timestamped_states <= NOT_FINAL
    source.check_states(name, FINAL | source.timestamped_states)
    for state in NOT_FINAL - source.timestamped_states:
        with pytest.raises(FlowRunsConfigError, match=f"{facts_of(name).label} does not say when a run entered"):
            source.check_states(name, {state})


# --- over HTTP against the emulator ------------------------------------------------------------------------


@pytest.fixture
def hook(name: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> FlowRunsHook:
    return FlowRunsHook(connect(monkeypatch, emulator, name))


@pytest.mark.parametrize("name", NAMES)
def test_a_run_starts_and_reads_back_by_id(name: str, hook: FlowRunsHook, emulator: Emulator, pdf: Path) -> None:
    started = start(hook, name, pdf)
    check_run(name, started)
    assert [(r["platform"], r["id"]) for r in emulator.runs()] == [(name, started.id)]
    read = hook.get_run(contract_of(name).flow_id, started.id)
    check_run(name, read)
    assert (read.id, read.flow_id) == (started.id, contract_of(name).flow_id)


@pytest.mark.parametrize("name", NAMES)
def test_a_finished_run_has_outputs(name: str, hook: FlowRunsHook, emulator: Emulator, pdf: Path) -> None:
    emulator.scenario(contract_of(name).flow_id, name, processing_seconds=0)
    run = read_until(hook, name, start(hook, name, pdf).id, RunState.SUCCEEDED)
    read = output_reader(name).read(run.raw)
    assert read.outputs and {output.kind for output in read.outputs} <= set(KINDS)
    document = outputs_document(run, read)
    assert (document["platform"], document["run_id"], document["state"]) == (name, run.id, "succeeded")
    json.dumps(document)


@pytest.mark.parametrize(("name", "raw"), STATUS_CASES, ids=[f"{name}-{raw}" for name, raw in STATUS_CASES])
def test_each_documented_status_reads_as_its_state(name: str, raw: str, hook: FlowRunsHook, emulator: Emulator) -> None:
    (run_id,) = seed(emulator, name, 1, processing_seconds=60)
    emulator.set_status(run_id, raw, error="the document could not be read")
    run = hook.get_run(contract_of(name).flow_id, run_id)
    assert (run.status, run.state) == (raw, contract_of(name).statuses[raw])
    assert (run.error is not None) == (run.state is RunState.FAILED)


@pytest.mark.parametrize("name", NAMES)
def test_an_unknown_status_is_refused(name: str, hook: FlowRunsHook, emulator: Emulator) -> None:
    (run_id,) = seed(emulator, name, 1, processing_seconds=60)
    emulator.set_status(run_id, "UNHEARD_OF")
    with pytest.raises(FlowRunsResponseError, match="run status 'UNHEARD_OF', which this provider does not know"):
        hook.get_run(contract_of(name).flow_id, run_id)


@pytest.mark.parametrize(("count", "pages"), [(0, 1), (25, 3)])
@pytest.mark.parametrize("scope", ["flow", "workspace"])
@pytest.mark.parametrize("name", NAMES)
def test_a_listing_walks_every_page_once(
    name: str, scope: str, count: int, pages: int, hook: FlowRunsHook, emulator: Emulator
) -> None:
    ids = seed(emulator, name, count)
    flow_id = contract_of(name).flow_id if scope == "flow" else None
    if flow_id is None and not contract_of(name).workspace_listing:
        with pytest.raises(FlowRunsConfigError, match="give flow_id"):
            list(hook.list_runs(page_size=10))
        assert emulator.requests() == []
        return
    assert [run.id for run in hook.list_runs(flow_id=flow_id, page_size=10)] == ids[::-1], "newest first"
    assert [r["method"] for r in emulator.requests()] == ["GET"] * pages, "one request per page"


@pytest.mark.parametrize("name", NAMES)
def test_a_listing_filtered_by_state_holds_only_runs_in_it(name: str, hook: FlowRunsHook, emulator: Emulator) -> None:
    ids = seed(emulator, name, 5)
    flow_id = contract_of(name).flow_id
    assert sorted(run.id for run in hook.list_runs(flow_id=flow_id, states=["succeeded"])) == sorted(ids)
    assert list(hook.list_runs(flow_id=flow_id, states=["failed", "needs_review"])) == []


@pytest.mark.parametrize("name", NAMES)
def test_a_run_is_cancelled_where_the_platform_can_cancel(name: str, hook: FlowRunsHook, emulator: Emulator) -> None:
    (run_id,) = seed(emulator, name, 1, processing_seconds=60)
    flow_id = contract_of(name).flow_id
    assert hook.cancel_run(flow_id, run_id) is PLATFORMS[name].can_cancel
    if PLATFORMS[name].can_cancel:
        read_until(hook, name, run_id, RunState.CANCELLED)
    else:
        assert emulator.requests() == [], "no call is made where there is no cancel"
        assert hook.get_run(flow_id, run_id).state is RunState.RUNNING


@pytest.mark.parametrize("name", NAMES)
def test_a_run_in_a_state_the_change_source_times_has_a_change_time(
    name: str, hook: FlowRunsHook, emulator: Emulator
) -> None:
    """Read from the listing, as the watcher reads runs."""
    source = change_source(name)
    timed = [raw for raw, state in statuses(name).items() if state in source.timestamped_states]
    for raw in timed:
        (run_id,) = seed(emulator, name, 1, processing_seconds=60)
        emulator.set_status(run_id, raw)
        (run,) = [run for run in hook.list_runs(flow_id=contract_of(name).flow_id) if run.id == run_id]
        changed = source.changed_at(run)
        assert changed is not None and changed.tzinfo is not None, raw


@pytest.mark.parametrize("name", NAMES)
def test_the_change_source_finds_a_run_that_finished_in_the_window(
    name: str, hook: FlowRunsHook, emulator: Emulator
) -> None:
    since = datetime.now(UTC) - timedelta(hours=2)
    ids = seed(emulator, name, 3)

    async def changed() -> list[FlowRun]:
        client = await FlowRunsHook.get_async_client(hook.flowruns_conn_id)
        try:
            source = change_source(name)
            found = source.runs_since(client, contract_of(name).flow_id, FINAL, since, timedelta(hours=1))
            return [run async for run in found]
        finally:
            await FlowRunsHook.close_async_clients()

    runs = asyncio.run(changed())
    assert sorted(run.id for run in runs) == sorted(ids)
    for run in runs:
        changed_at = change_source(name).changed_at(run)
        assert run.state is RunState.SUCCEEDED and run.created_at is not None
        assert changed_at is not None and changed_at >= run.created_at


@pytest.mark.parametrize("name", NAMES)
def test_the_connection_test_passes_and_names_a_bad_key(
    name: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `airflow connections test` and the UI's Test button run, in process."""
    from airflow.models.connection import Connection

    facts = facts_of(name)
    ok, message = Connection.get_connection_from_secrets(connect(monkeypatch, emulator, name)).test_connection()
    assert ok, message
    assert message == f"Connected to {facts.label} at {emulator.url}{facts.base_path}."
    extras = dict(contract_of(name).extras)
    bad = set_connection(
        monkeypatch, "contract_bad_key", name, emulator.url, password="not-the-key", max_retries=0, **extras
    )
    ok, message = Connection.get_connection_from_secrets(bad).test_connection()
    assert not ok
    assert message.startswith(f"{facts.label} API call") and "(HTTP 401)" in message, message
    assert "not-the-key" not in message


@pytest.mark.parametrize("name", NAMES)
def test_the_emulator_says_what_it_serves_and_hands_out_a_working_connection(
    name: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The platform's part of the emulator describes its flows (``served``) for the discovery call and the
    start-up banner; the connection they hand out passes the connection test pasted as is."""
    found = emulator.control.get("/discovery").raise_for_status().json()["platforms"][name]
    module = facts_of(name).module("emulator")
    assert [flow["id"] for flow in found["flows"]] == [flow_id for flow_id, _ in module.scenarios(EmulatorConfig())]
    row = contract_of(name)
    flow = next(flow for flow in found["flows"] if flow["id"] == row.flow_id)
    assert row.file_field in [field["name"] for field in flow["files"]]
    monkeypatch.setenv(found["connection"]["env_var"], found["connection"]["json"])
    hook = FlowRunsHook(found["connection"]["conn_id"])
    ok, message = hook.test_connection()
    hook.client.close()
    assert ok, message


DAG = """
from datetime import datetime
from importlib import import_module

from airflow.sdk import DAG

from airflow_flowruns.operators.flow_run import FlowRunOperator
from airflow_flowruns.platforms import register

with DAG("platform_contract", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    for name, package, flow_id, files, inputs in {tasks!r}:
        register(import_module(package).FACTS)
        FlowRunOperator(
            task_id=name,
            flowruns_conn_id=f"contract_{{name}}",
            flow_id=flow_id,
            files=files,
            inputs=inputs,
            deferrable=True,
            poll_interval=0.1,
        )
"""


@pytest.mark.integration
def test_a_deferrable_dag_runs_a_task_on_every_platform(
    airflow_home: Path, emulator: Emulator, pdf: Path, tmp_path: Path
) -> None:
    """The DAG file registers each platform from its folder, as a DAG using a platform from outside the
    package would; each task defers to the triggerer (StackAI's runs in the worker: it is synchronous)."""
    rows = {name: contract_of(name) for name in NAMES}
    tasks = [
        (name, facts_of(name).package, row.flow_id, {row.file_field: str(pdf)}, dict(row.inputs))
        for name, row in rows.items()
    ]
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "platform_contract.py").write_text(DAG.format(tasks=tasks))
    connections: dict[str, Any] = {
        f"AIRFLOW_CONN_CONTRACT_{name.upper()}": json.dumps(
            {"conn_type": name, "password": API_KEY, "host": emulator.url, "extra": dict(row.extras)}
        )
        for name, row in rows.items()
    }
    state, states, xcom = dags_test(
        airflow_home,
        "platform_contract",
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        PYTHONPATH=str(ROOT / "tests"),
        **connections,
    )
    assert (state, states) == ("success", {name: "success" for name in NAMES})
    started = {run["platform"]: run["id"] for run in emulator.runs()}
    for name in NAMES:
        result = xcom[f"{name}.return_value"]
        assert (result["platform"], result["state"], result["id"]) == (name, "succeeded", started[name])
