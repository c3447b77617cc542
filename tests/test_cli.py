"""``airflow flowruns`` and the ``flowruns`` console script, run as a user runs them: a process of their own, an
Airflow home, the connection in an ``AIRFLOW_CONN_...`` variable, the emulator (or the hostile server) on loopback.

Every command's output is checked for tracebacks and for the connection's keys, which must appear nowhere. The
processes of one test run side by side where they do not depend on each other, so the module stays quick.
"""

from __future__ import annotations

import argparse
import datetime
import email.utils
import json
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from importlib import import_module
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from airflow.providers.common.compat.sdk import Context

from airflow_flowruns.batch.documents import BatchKeys
from airflow_flowruns.cli.arguments import since
from airflow_flowruns.cli.definition import FLOWRUNS, get_flowruns_cli_commands
from airflow_flowruns.cli.live_keys import LiveKeys
from airflow_flowruns.cli.main import main, parser
from airflow_flowruns.emulator import EmulatorServer
from airflow_flowruns.get_provider_info import get_provider_info
from airflow_flowruns.operators._reattach import task_key
from airflow_flowruns.operators.batch import batch_key
from airflow_flowruns.platforms.extend.emulator import EXTEND_INVOICE_WORKFLOW
from airflow_flowruns.platforms.noxus.emulator import NOXUS_DOCUMENT_WORKFLOW
from airflow_flowruns.platforms.start import key_in_name
from airflow_flowruns.version_compat import AIRFLOW_V_3_2_PLUS
from support.airflow import AIRFLOW, airflow_env, dags_test
from support.certificates import self_signed as self_signed_certificate
from support.emulator import API_KEY, FAST_RETRIES, Emulator, set_connection
from support.hostile_server import Exchange, HostileServer

SCRIPT = str(Path(sys.executable).parent / "flowruns")
WRONG_KEY = "sk-wrong-key-never-printed-0001"
HOSTILE_KEYS = {
    "limited": "sk-rate-limited-key-0002",
    "echoed": "sk-echoed-key-never-printed-0003",
    "forbidden": "sk-forbidden-key-0004",
}
SECRETS = (API_KEY, WRONG_KEY, *HOSTILE_KEYS.values())
needs_provider_cli = pytest.mark.skipif(not AIRFLOW_V_3_2_PLUS, reason="Airflow reads provider CLI commands from 3.2")


def connection(conn_type: str, url: str, password: str = API_KEY, **extra: Any) -> str:
    return json.dumps({"conn_type": conn_type, "password": password, "host": url, "extra": {**FAST_RETRIES, **extra}})


def run_all(home: Path, env: dict[str, str], *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Run ``commands`` side by side in ``home`` with the connections of ``env``; each, once ended, checked for
    what no command ever prints: a traceback or a key."""
    started = [
        subprocess.Popen(
            command, env=airflow_env(home, **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for command in commands
    ]
    done = []
    for command, process in zip(commands, started, strict=True):
        out, err = process.communicate(timeout=120)
        assert "Traceback" not in out + err, f"{command}:\n{err[-3000:]}"
        assert not [secret for secret in SECRETS if secret in out + err], f"{command} printed a key:\n{out}{err}"
        done.append(subprocess.CompletedProcess(command, process.returncode, out, err))
    return done


def flowruns(*args: str) -> list[str]:
    return [SCRIPT, *args]


def airflow_flowruns(*args: str) -> list[str]:
    return [AIRFLOW, "flowruns", *args]


def ti_context(dag_id: str, task_id: str, run_id: str) -> Context:
    """A context holding just what the key functions read of a task instance."""
    return cast("Context", {"ti": SimpleNamespace(dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=-1)})


def seed(emulator: Emulator, processing_seconds: float, **metadata: str) -> str:
    body = {
        "platform": "extend",
        "flow_id": EXTEND_INVOICE_WORKFLOW,
        "scenario": {"processing_seconds": processing_seconds},
        "metadata": metadata,
    }
    (run_id,) = emulator.control.post("/seed", json=body).json()["ids"]
    return run_id


# --- one definition, two entry points -------------------------------------------------------------------------


def command_tree(made: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], list[str]]:
    """Every command's path and the options it takes, as a parser built them."""
    tree: dict[tuple[str, ...], list[str]] = {}
    for action in made._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, below in action.choices.items():
                tree.update(command_tree(below, (*path, name)))
    if not tree:
        tree[path] = sorted(option for action in made._actions for option in action.option_strings or [action.dest])
    return tree


def test_the_console_script_and_airflow_build_the_same_commands() -> None:
    ours = command_tree(parser())
    assert set(ours) == {("runs", "list"), ("runs", "get"), ("runs", "cancel"), ("orphans",), ("doctor",)}
    assert "--since" in ours[("runs", "list")] and "--cancel" in ours[("orphans",)]
    if AIRFLOW_V_3_2_PLUS:
        from airflow.cli import cli_parser

        airflows = command_tree(cli_parser.get_parser())
        assert {path[1:]: options for path, options in airflows.items() if path[0] == "flowruns"} == ours


def test_the_provider_info_names_the_commands_for_airflow() -> None:
    (path,) = get_provider_info()["cli"]
    module, _, name = path.rpartition(".")
    assert getattr(import_module(module), name) is get_flowruns_cli_commands
    assert get_flowruns_cli_commands() == [FLOWRUNS]
    if AIRFLOW_V_3_2_PLUS:
        from airflow.providers_manager import ProvidersManager

        assert get_flowruns_cli_commands in ProvidersManager().cli_command_functions


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2d", datetime.timedelta(days=2)),
        ("90m", datetime.timedelta(minutes=90)),
        ("1w", datetime.timedelta(weeks=1)),
    ],
)
def test_since_takes_an_age(value: str, expected: datetime.timedelta) -> None:
    before = datetime.datetime.now(datetime.UTC)
    given = since(value)
    assert before - expected <= given <= datetime.datetime.now(datetime.UTC) - expected


def test_since_takes_an_iso_time_in_utc_unless_it_says_otherwise() -> None:
    assert since("2024-05-01") == datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC)
    assert since("2024-05-01T12:00:00+02:00") == datetime.datetime(2024, 5, 1, 10, tzinfo=datetime.UTC)
    with pytest.raises(argparse.ArgumentTypeError, match="neither an age"):
        since("yesterday")


def test_live_keys_are_the_keys_the_operators_stamp_on_their_runs(context: Context) -> None:
    """The keys made from a task instance row are the ones the operator and the batch operator put on runs."""
    ti = context["ti"]
    live = LiveKeys.of([SimpleNamespace(dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id, map_index=-1)])
    assert live.owns(task_key(context))
    assert live.owns(BatchKeys(batch_key(context), 1, 4).run_key("2024/invoice-001.pdf"))
    other = ti_context(ti.dag_id, "other", ti.run_id)
    assert not live.owns(task_key(other))
    assert not live.owns(BatchKeys(batch_key(other)).run_key("2024/invoice-001.pdf"))


# --- runs list, get, cancel ---------------------------------------------------------------------------------


def test_runs_list_get_and_cancel(airflow_home: Path, emulator: Emulator) -> None:
    """Through the console script, and through ``airflow flowruns`` where Airflow reads provider commands."""
    running, settled = seed(emulator, 3600), seed(emulator, 0)
    env = {"AIRFLOW_CONN_CLI_EXTEND": connection("extend", emulator.url)}
    conn = ("--conn-id", "cli_extend")
    either = airflow_flowruns if AIRFLOW_V_3_2_PLUS else flowruns
    listed, limited, got = run_all(
        airflow_home,
        env,
        flowruns("runs", "list", *conn, "--output", "json"),
        either("runs", "list", *conn, "--state", "running", "--since", "1h", "--limit", "1"),
        either("runs", "get", running, *conn, "-o", "json"),
    )
    assert {listed.returncode, limited.returncode, got.returncode} == {0}, listed.stderr + limited.stderr + got.stderr
    assert {run["id"] for run in json.loads(listed.stdout)} == {running, settled}
    header, *rows = limited.stdout.splitlines()
    assert header.split() == ["RUN", "FLOW", "STATE", "STATUS", "CREATED", "CREDITS"]
    assert [row.split()[:3] for row in rows] == [[running, EXTEND_INVOICE_WORKFLOW, "running"]]
    assert json.loads(got.stdout) == next(run for run in json.loads(listed.stdout) if run["id"] == running)

    (cancelled,) = run_all(airflow_home, env, flowruns("runs", "cancel", running, *conn, "-o", "json"))
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["status"] in ("CANCELLING", "CANCELLED")
    assert {run["id"]: run["status"] for run in emulator.runs()}[running] in ("CANCELLING", "CANCELLED")


# --- bad input ----------------------------------------------------------------------------------------------


def run_here(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """A command run in this process, as the console script runs it: its exit status, stdout and stderr, checked
    for a key as :func:`run_all` checks them."""
    try:
        main(list(args))
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    assert not [secret for secret in SECRETS if secret in out + err], f"{args} printed a key:\n{out}{err}"
    return status, out, err


def test_bad_input_is_the_providers_error_and_exit_status_2(
    airflow_home: Path, emulator: Emulator, tmp_path: Path
) -> None:
    """Each entry point's way out: the message on stderr, exit status 2, no traceback, no key. ``orphans`` in an
    Airflow home whose database was never made cannot tell an orphan, and says so."""
    emulator.fault("/workflow_runs", 403, json.dumps({"message": "Missing scope workflow_runs:read"}), count=20)
    env = {
        "AIRFLOW_CONN_CLI_EXTEND": connection("extend", emulator.url),
        "AIRFLOW_CONN_CLI_TABLEFLOW": connection("tableflow", emulator.url),
        "AIRFLOW_CONN_CLI_POSTGRES": json.dumps({"conn_type": "postgres", "host": "db", "password": API_KEY}),
    }
    no_database = ["env", f"AIRFLOW_HOME={tmp_path}", *flowruns("orphans", "--conn-id", "cli_tableflow")]
    either = airflow_flowruns if AIRFLOW_V_3_2_PLUS else flowruns
    cases = [
        (
            "has type 'postgres', which is not a flow-runs platform",
            flowruns("runs", "list", "--conn-id", "cli_postgres"),
        ),
        ("Connection 'cli_missing' is not defined", either("orphans", "--conn-id", "cli_missing")),
        ("'list runs' failed (HTTP 403): Missing scope", either("runs", "list", "--conn-id", "cli_extend")),
        ("Airflow's metadata database cannot be read (no such table", no_database),
    ]
    done = run_all(airflow_home, env, *(command for _, command in cases))
    for (message, _), ended in zip(cases, done, strict=True):
        assert (ended.returncode, ended.stdout) == (2, ""), (ended.args, ended.stdout, ended.stderr)
        assert message in ended.stderr, (ended.args, ended.stderr)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("runs", "get", "run_that_never_was", "--conn-id", "cli_tableflow"), "'get run' failed (HTTP 404)"),
        (("runs", "cancel", "run_1", "--conn-id", "cli_tableflow"), "TableFlow has no API call that cancels"),
        (("orphans", "--conn-id", "cli_tableflow", "--cancel"), "TableFlow has no API call that cancels"),
        (("runs", "list", "--conn-id", "cli_wrong_key"), "'list runs' failed (HTTP 401)"),
        (("runs", "list", "--conn-id", "cli_postgres"), "has type 'postgres', which is not a flow-runs platform"),
        (("doctor", "cli_postgres"), "has type 'postgres', which is not a flow-runs platform"),
        (("doctor", "cli_missing"), "Connection 'cli_missing' is not defined"),
        (("runs", "list", "--conn-id", "cli_tableflow", "--since", "yesterday"), "'yesterday' is neither an age"),
        (("runs", "list", "--conn-id", "cli_tableflow", "--state", "done"), "invalid choice: 'done'"),
        (("runs", "list", "--conn-id", "cli_tableflow", "--limit", "0"), "'0' is not a whole number of at least 1"),
    ],
)
def test_every_command_refuses_bad_input_with_exit_status_2(
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    message: str,
) -> None:
    set_connection(monkeypatch, "cli_tableflow", "tableflow", emulator.url)
    set_connection(monkeypatch, "cli_wrong_key", "tableflow", emulator.url, password=WRONG_KEY)
    monkeypatch.setenv("AIRFLOW_CONN_CLI_POSTGRES", json.dumps({"conn_type": "postgres", "password": API_KEY}))
    status, out, err = run_here(capsys, *args)
    assert (status, out) == (2, ""), err
    assert message in err and "Traceback" not in err


# --- doctor -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by an authority no machine trusts (itself), and its key: the certificate
    is also the authority's, to name in ``verify``."""
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def self_signed(certificate: tuple[Path, Path]) -> Iterator[str]:
    """The emulator over TLS, with the certificate no machine trusts."""
    cert, private = certificate
    with EmulatorServer(ssl_certfile=str(cert), ssl_keyfile=str(private)) as server:
        yield server.url


@pytest.fixture
def tls_port_answering_plain_http(certificate: tuple[Path, Path]) -> Iterator[str]:
    """A TLS port that answers a plain HTTP request with a plain ``400``, as nginx does; its URL with ``http://``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:  # closed: the test is over
                return
            with sock:
                sock.settimeout(5)
                try:
                    if sock.recv(1, socket.MSG_PEEK) == b"\x16":  # a TLS handshake record
                        with context.wrap_socket(sock, server_side=True) as tls:
                            tls.recv(1)
                    else:
                        sock.recv(65536)
                        sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def hostile_platform(ex: Exchange) -> None:
    """A TableFlow that tells its keys apart: one is rate limited, with its clock two hours ahead; one is echoed
    back in a 401; one may not read. Any other request (no key: doctor's first contact) gets an empty list."""
    credentials = ex.credentials()
    if HOSTILE_KEYS["limited"] in credentials:
        ahead = email.utils.formatdate(time.time() + 7200, usegmt=True)
        ex.send(429, b'{"message": "slow down"}', Retry_After="30", X_RateLimit_Limit="5", Date=ahead)
    elif HOSTILE_KEYS["echoed"] in credentials:
        ex.send(401, json.dumps({"message": f"bad key {credentials}"}).encode())
    elif HOSTILE_KEYS["forbidden"] in credentials:
        ex.send(403, b'{"message": "this key may not list flows"}')
    else:
        ex.send(200, b"[]")


def test_doctor_passes_a_working_connection(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    set_connection(monkeypatch, "cli_extend", "extend", emulator.url)
    status, out, err = run_here(capsys, "doctor", "cli_extend")
    assert status == 0, out + err
    lines = [line.split(maxsplit=1) for line in out.splitlines()]
    names = ("connection", "scheme and TLS", "authentication", "runs page", "base path", "clock", "rate limit")
    assert [(outcome, rest.split("  ")[0]) for outcome, rest in lines] == [("OK", name) for name in names], out


def test_doctor_names_the_fix_for_each_failure(
    emulator: Emulator,
    hostile: HostileServer,
    self_signed: str,
    certificate: tuple[Path, Path],
    tls_port_answering_plain_http: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hostile.answer = hostile_platform
    conns: dict[str, tuple[str, str, dict[str, Any]]] = {
        "plain_behind_https": ("tableflow", hostile.url.replace("http://", "https://"), {"timeout": 2}),
        "unknown_authority": ("extend", self_signed, {}),
        "known_authority": ("extend", self_signed, {"verify": str(certificate[0])}),
        "http_to_tls": ("extend", self_signed.replace("https://", "http://"), {}),
        "http_to_tls_answering_400": ("extend", tls_port_answering_plain_http, {}),
        "stray_version": ("tableflow", f"{emulator.url}/v1", {}),
        "limited": ("tableflow", hostile.url, {"password": HOSTILE_KEYS["limited"], "max_requests_per_second": 2}),
        "echoed": ("tableflow", hostile.url, {"password": HOSTILE_KEYS["echoed"]}),
        "forbidden": ("tableflow", hostile.url, {"password": HOSTILE_KEYS["forbidden"]}),
    }
    reports, statuses = {}, {}
    for name, (conn_type, url, extra) in conns.items():
        set_connection(monkeypatch, f"cli_{name}", conn_type, url, **extra)
        statuses[name], out, _ = run_here(capsys, "doctor", f"cli_{name}", "-o", "json")
        reports[name] = {check["name"]: check for check in json.loads(out)}
    assert statuses == {**dict.fromkeys(conns, 1), "known_authority": 0}

    scheme = {name: report["scheme and TLS"] for name, report in reports.items()}
    assert "answers plain HTTP, not TLS" in scheme["plain_behind_https"]["detail"]
    assert "does not trust" in scheme["unknown_authority"]["detail"] and "verify" in scheme["unknown_authority"]["fix"]
    for name in ("http_to_tls", "http_to_tls_answering_400"):
        assert "speaks TLS" in scheme[name]["detail"] and "https://" in scheme[name]["fix"], scheme[name]
    assert reports["unknown_authority"]["authentication"]["outcome"] == "SKIP"
    assert {check["outcome"] for check in reports["known_authority"].values()} == {"OK"}

    assert reports["stray_version"]["base path"]["outcome"] == "FAIL"
    assert "remove /v1" in reports["stray_version"]["base path"]["fix"]

    limited = reports["limited"]
    assert limited["rate limit"]["outcome"] == "FAIL" and "HTTP 429" in limited["rate limit"]["detail"]
    assert "x-ratelimit-limit: 5" in limited["rate limit"]["detail"]
    assert "max_requests_per_second=2" in limited["rate limit"]["detail"]
    assert limited["clock"]["outcome"] == "FAIL" and "ahead of this machine's" in limited["clock"]["detail"]
    assert "NTP" in limited["clock"]["fix"]

    assert "HTTP 401" in reports["echoed"]["authentication"]["detail"]
    assert "password field" in reports["echoed"]["authentication"]["fix"]
    assert "HTTP 403" in reports["forbidden"]["authentication"]["detail"]
    assert "permission" in reports["forbidden"]["authentication"]["fix"]


# --- orphans ------------------------------------------------------------------------------------------------

DAG_ID = "flowruns_cli_orphans"
ORPHANS_DAG = """
from datetime import datetime

from airflow.sdk import DAG

from airflow_flowruns.operators.flow_run import FlowRunOperator

with DAG("flowruns_cli_orphans", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    for task_id in ("gone", "deferred"):
        FlowRunOperator(
            task_id=task_id,
            flowruns_conn_id="cli_{platform}",
            flow_id="{flow}",
            files={{"{field}": "{pdf}"}},
            inputs={inputs},
            wait_for_completion=False,
        )
"""
ORPHANS_FLOWS = {
    "extend": (EXTEND_INVOICE_WORKFLOW, "file", {}, ("CANCELLING", "CANCELLED"), "PROCESSING"),
    "noxus": (NOXUS_DOCUMENT_WORKFLOW, "document", {"instructions": "Summarize"}, ("stopped",), "running"),
}


def key_of(run: dict[str, Any]) -> str | None:
    """The task key an emulated run carries: in its metadata (Extend), or in its file's name (Noxus)."""
    stamped = (run.get("metadata") or {}).get("airflow_task_key")
    named = ((run.get("input") or {}).get("document") or {}).get("name", "")
    return stamped or key_in_name(named)


def set_states(home: Path, dag_run: str, **task_states: str) -> str:
    """Set the state of the orphans DAG's last run and of some of its task instances, as the scheduler or the
    triggerer would; its run id."""
    with sqlite3.connect(home / "airflow.db") as db:
        (run_id,) = db.execute("SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC", (DAG_ID,)).fetchone()
        db.execute("UPDATE dag_run SET state = ? WHERE dag_id = ? AND run_id = ?", (dag_run, DAG_ID, run_id))
        for task_id, state in task_states.items():
            db.execute(
                "UPDATE task_instance SET state = ? WHERE dag_id = ? AND task_id = ? AND run_id = ?",
                (state, DAG_ID, task_id, run_id),
            )
    return str(run_id)


@pytest.mark.parametrize("platform", sorted(ORPHANS_FLOWS))
def test_orphans_lists_the_runs_of_tasks_that_are_gone_and_cancels_them(
    airflow_home: Path, emulator: Emulator, pdf: Path, tmp_path: Path, platform: str
) -> None:
    """A DAG run whose two tasks each started a run and ended. While the DAG run is running no run is an orphan (a
    later task may follow them); once it ended, with one task instance put back to deferred as one waiting in the
    triggerer is, only the other's run is. A run started outside Airflow never is. Noxus keeps no run metadata:
    its runs carry the task key in their file's name."""
    flow, field, inputs, cancelled, running = ORPHANS_FLOWS[platform]
    emulator.scenario(flow, platform, processing_seconds=3600)
    manual = emulator.control.post(f"/{platform}/flows/{flow}/manual-runs", json={})
    dags = tmp_path / "dags"
    dags.mkdir()
    dag = ORPHANS_DAG.format(platform=platform, flow=flow, field=field, inputs=inputs, pdf=pdf)
    (dags / "orphans.py").write_text(dag)
    conn_id = f"cli_{platform}"
    env = {
        f"AIRFLOW_CONN_{conn_id.upper()}": connection(platform, emulator.url),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
    }
    state, tasks, _ = dags_test(airflow_home, DAG_ID, **env)
    assert state == "success" and tasks == {"gone": "success", "deferred": "success"}
    run_id = set_states(airflow_home, "running")
    keys = {task: task_key(ti_context(DAG_ID, task, run_id)) for task in ("gone", "deferred")}
    runs = {key_of(run): run["id"] for run in emulator.runs()}
    assert manual.status_code == 200 and set(runs) == {*keys.values(), None}

    (followed,) = run_all(airflow_home, env, flowruns("orphans", "--conn-id", conn_id, "-o", "json"))
    assert (followed.returncode, json.loads(followed.stdout)) == (0, []), followed.stderr

    set_states(airflow_home, "success", deferred="deferred")
    command = airflow_flowruns if AIRFLOW_V_3_2_PLUS else flowruns
    (ended,) = run_all(airflow_home, env, command("orphans", "--conn-id", conn_id, "--cancel", "-o", "json"))
    assert ended.returncode == 0, ended.stderr
    (orphan,) = json.loads(ended.stdout)
    assert (orphan["id"], orphan["airflow_key"], orphan["state"]) == (runs[keys["gone"]], keys["gone"], "running")
    assert orphan["cancelled"] is True and orphan["age_seconds"] >= 0 and "1 orphaned run(s)" in ended.stderr
    statuses = {run["id"]: run["status"] for run in emulator.runs()}
    assert statuses[runs[keys["gone"]]] in cancelled
    assert statuses[runs[keys["deferred"]]] == running and statuses[runs[None]] == running
