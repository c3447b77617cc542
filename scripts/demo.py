"""`make demo`: the bundled emulator, a throwaway Airflow home, and two example DAGs end to end.

1. ``tableflow_invoice_reconciliation``: one TableFlow run, its tasks and the XCom its ``reconcile`` task pushed.
2. ``invoices_to_database``: five invoices extracted by Extend runs, their outputs landed, the extracted
   fields loaded into a SQLite table, which is printed.

Each step is reported as it happens, with the seconds since the start: the emulator, the migrated Airflow
database, each DAG run's task states as Airflow records them, each run's end. Every table printed says what it
is and where it comes from; the demo ends with what to try next.

Exits non-zero unless both DAG runs succeeded and the table holds one row per invoice.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
API_KEY = "emulator-key"  # the emulator's default key
EMULATOR_DEFAULT_URL = "http://127.0.0.1:8765"  # where `flowruns-emulator` listens without --host and --port
INVOICES = ("acme-0042.pdf", "globex-7781.pdf", "initech-0193.pdf", "umbrella-5520.pdf", "stark-3107.pdf")
QUIET_STATES = frozenset({None, "scheduled", "queued"})
"""Task states every task passes through on its way to running: the progress lines leave them out."""
STATE_NOTES = {"deferred": " (the run is followed from the triggerer; the worker slot is free)"}
TAIL_CHARS = 6000
"""How much of a failed `airflow dags test` output is printed: its end, where Airflow says why a task failed."""
POLL_SECONDS = 0.2
"""The longest time between two reads of Airflow's database while `airflow dags test` runs."""
VALUE_WIDTH = 72
"""Where a long XCom value is cut."""
MAX_FIELDS = 12
"""The most fields of one XCom dictionary printed."""


@dataclass(frozen=True)
class DemoDag:
    dag_id: str
    what: str
    xcom_task: str | None = None  # the task whose XCom is printed after the run


DAGS = (
    DemoDag("tableflow_invoice_reconciliation", "one TableFlow run reconciling a PO and its invoice", "reconcile"),
    DemoDag("invoices_to_database", f"{len(INVOICES)} invoices extracted by Extend runs, loaded into SQLite"),
)


class Clock:
    """Progress lines, each prefixed with the seconds since the demo started."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def seconds(self) -> float:
        return time.monotonic() - self.start

    def say(self, message: str) -> None:
        print(f"[{self.seconds():5.1f}s] {message}", flush=True)


class Workspace:
    """The demo's temporary folder: Airflow's home, the documents the DAGs read, where outputs land."""

    def __init__(self, root: Path) -> None:
        self.root, self.airflow_db, self.invoices_db = root, root / "airflow" / "airflow.db", root / "invoices.db"

    def write_documents(self) -> None:
        for folder, names in (("data", ("po.pdf", "inv.pdf", "a.pdf", "b.pdf")), ("invoices", INVOICES)):
            (self.root / folder).mkdir()
            for name in names:
                (self.root / folder / name).write_bytes(b"%PDF-1.4\n% demo document " + name.encode() + b"\n%%EOF\n")

    def airflow_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "AIRFLOW_HOME": str(self.root / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_VAR_FLOWRUNS_DATA_DIR": str(self.root / "data"),
            "AIRFLOW_VAR_FLOWRUNS_INVOICES_DIR": str(self.root / "invoices"),
            "AIRFLOW_VAR_FLOWRUNS_OUTPUTS_DIR": str(self.root / "outputs"),
        }

    def connections(self, url: str) -> dict[str, str]:
        """The DAGs' connections: the emulator at ``url`` for both platforms, and the SQLite file of invoices."""
        platforms = {name: {"conn_type": name, "password": API_KEY, "host": url} for name in ("tableflow", "extend")}
        return {
            **{f"AIRFLOW_CONN_{name.upper()}_DEFAULT": json.dumps(conn) for name, conn in platforms.items()},
            "AIRFLOW_CONN_INVOICES_DB": json.dumps({"conn_type": "sqlite", "host": str(self.invoices_db)}),
        }


def main() -> int:
    clock = Clock()
    print("The flowruns demo: the bundled emulator, a throwaway Airflow (SQLite) and two example DAGs run with")
    print("`airflow dags test`. About a minute; each line starts with the seconds since the start.\n")
    with tempfile.TemporaryDirectory(prefix="flowruns-demo-") as tmp:
        workspace = Workspace(Path(tmp))
        workspace.write_documents()
        clock.say(f"working folder {tmp} (removed when the demo ends)")
        # Airflow's database is migrated while the emulator starts: neither waits for the other.
        migrate = [str(BIN / "airflow"), "db", "migrate"]
        migrating = subprocess.Popen(migrate, env=workspace.airflow_env(), stdout=subprocess.DEVNULL)
        with emulator_running() as url:
            clock.say(f"emulator started: TableFlow, Extend, Noxus and StackAI APIs at {url}")
            if migrating.wait() != 0:
                raise subprocess.CalledProcessError(migrating.returncode, migrate)
            clock.say(f"Airflow database migrated: {workspace.airflow_db}")
            env = {**workspace.airflow_env(), **workspace.connections(url)}
            succeeded = [run_dag(dag, env, workspace.airflow_db, clock) for dag in DAGS]
        rows = print_invoices(workspace.invoices_db)
    ok = all(succeeded) and rows == len(INVOICES)
    if ok:
        print("\nNext steps:")
        print("\n".join(next_steps(BIN, ROOT, Path.cwd())))
    else:
        troubleshooting = shown(ROOT / "docs" / "troubleshooting.md", Path.cwd())
        print(f"\nThe demo FAILED: the labelled output above says where; {troubleshooting} lists causes and fixes.")
    print(f"\nThe demo {'succeeded' if ok else 'failed'} in {clock.seconds():.0f} s.")
    return 0 if ok else 1


@contextmanager
def emulator_running() -> Iterator[str]:
    """The bundled emulator on a free loopback port, for the block's length; its URL."""
    emulator = subprocess.Popen(
        [str(BIN / "flowruns-emulator"), "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert emulator.stdout is not None
        yield emulator.stdout.readline().strip().rsplit(" ", 1)[-1]
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)


def run_dag(dag: DemoDag, env: dict[str, str], airflow_db: Path, clock: Clock) -> bool:
    """One `airflow dags test`, followed as it runs, then its tables; whether its DAG run succeeded."""
    clock.say(f"DAG {dag.dag_id} started: {dag.what}")
    started = clock.seconds()
    watcher = RunWatcher(airflow_db, dag.dag_id, clock)
    returncode, tail = follow_dags_test(dag.dag_id, env, watcher)
    run = watcher.finished_run()
    if run is None:
        clock.say(f"DAG {dag.dag_id}: no DAG run was created")
    else:
        run_id, state, run_seconds = run
        clock.say(
            f"DAG run {run_id} of {dag.dag_id} ended {state} after {run_seconds:.1f} s"
            f" (`airflow dags test` took {clock.seconds() - started:.1f} s)"
        )
        print_tasks(airflow_db, dag.dag_id, run_id)
        if dag.xcom_task:
            print_xcom(airflow_db, dag.dag_id, run_id, dag.xcom_task)
    succeeded = run is not None and run[1] == "success" and returncode == 0
    if not succeeded:
        # `airflow dags test` can exit 0 for a failed DAG run: its log says why a task failed.
        command = f"airflow dags test {dag.dag_id}"
        print(f"\n---- FAILED: {command} exited {returncode}; the end of its output ----")
        print(tail, end="" if tail.endswith("\n") else "\n")
        print(f"---- end of the output of {command} ----")
    print()
    return succeeded


def follow_dags_test(dag_id: str, env: dict[str, str], watcher: RunWatcher) -> tuple[int, str]:
    """Run `airflow dags test`, reading Airflow's database after the lines it prints (Airflow logs each state change
    it records) and every POLL_SECONDS without one, so each task's state changes are reported as they happen; the
    log's wording differs between Airflow versions, the database's tables do not. Its exit code and output's end."""
    test = subprocess.Popen(
        [str(BIN / "airflow"), "dags", "test", dag_id],
        env={**env, "PYTHONUNBUFFERED": "1"},  # each line as it is written, not in blocks
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert test.stdout is not None
    tail: deque[str] = deque(maxlen=400)
    printed = threading.Event()
    reader = threading.Thread(target=read_lines, args=(test.stdout, tail, printed), daemon=True)
    reader.start()
    while reader.is_alive():
        printed.wait(POLL_SECONDS)
        printed.clear()
        watcher.poll()
    returncode = test.wait()
    watcher.poll()
    return returncode, output_end("".join(tail))


def read_lines(stream: IO[str], tail: deque[str], printed: threading.Event) -> None:
    """Each line of ``stream`` onto ``tail``, setting ``printed``."""
    for line in stream:
        tail.append(line)
        printed.set()


def output_end(output: str, limit: int = TAIL_CHARS) -> str:
    """The whole lines at the end of ``output``, at most ``limit`` characters."""
    if len(output) <= limit:
        return output
    end = output[-limit:]
    return end[end.find("\n") + 1 :]


class RunWatcher:
    """Reports the task state changes of a DAG's run, read from Airflow's database (read-only)."""

    def __init__(self, airflow_db: Path, dag_id: str, clock: Clock) -> None:
        self.airflow_db, self.dag_id, self.clock = airflow_db, dag_id, clock
        self.run_id: str | None = None
        self.states: dict[tuple[str, int], str | None] = {}

    def poll(self) -> None:
        with suppress(sqlite3.OperationalError):  # Airflow holds a write lock: the next poll reads again
            self._report_changes()

    def _report_changes(self) -> None:
        if self.run_id is None:
            runs = query(
                self.airflow_db, "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id", self.dag_id, timeout=1
            )
            if not runs:
                return
            self.run_id = str(runs[-1][0])
            self.clock.say(f"  DAG run {self.run_id} created")
        for task_id, map_index, state in query(
            self.airflow_db,
            "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ? ORDER BY map_index",
            *(self.dag_id, self.run_id),
            timeout=1,
        ):
            if self.states.get((task_id, map_index), "unseen") != state:
                self.states[(task_id, map_index)] = state
                if state not in QUIET_STATES:
                    self.clock.say(f"  {task_label(task_id, map_index):<22} {state}{STATE_NOTES.get(state, '')}")

    def finished_run(self) -> tuple[str, str, float] | None:
        """The run's id, state and seconds from start to end, as Airflow recorded them; None without a run."""
        sql = "SELECT run_id, state, start_date, end_date FROM dag_run WHERE dag_id = ? ORDER BY id"
        runs = query(self.airflow_db, sql, self.dag_id)
        if not runs:
            return None
        run_id, state, start, end = runs[-1]
        seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() if start and end else 0
        return str(run_id), str(state), seconds


def query(database: Path, sql: str, *params: object, timeout: float = 5.0) -> list[Any]:
    """The rows one query reads from a SQLite file, read-only: Airflow may be writing it meanwhile."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=timeout)) as conn:
        return conn.execute(sql, params).fetchall()


def task_label(task_id: str, map_index: int) -> str:
    return task_id if map_index < 0 else f"{task_id}[{map_index}]"


def print_tasks(airflow_db: Path, dag_id: str, run_id: str) -> None:
    rows = query(
        airflow_db,
        "SELECT task_id, map_index, state, duration FROM task_instance WHERE dag_id = ? AND run_id = ? "
        "ORDER BY start_date, map_index",
        *(dag_id, run_id),
    )
    print(f"\nTasks of DAG run {run_id} of {dag_id} (Airflow's task_instance table):")
    print(f"  {'task':<22} {'state':<15} {'seconds':>7}")
    for task_id, map_index, state, duration in rows:
        seconds = "" if duration is None else f"{duration:.1f}"
        print(f"  {task_label(task_id, map_index):<22} {state or '-':<15} {seconds:>7}")


def print_xcom(airflow_db: Path, dag_id: str, run_id: str, task_id: str) -> None:
    sql = "SELECT key, value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? ORDER BY key"
    rows = query(airflow_db, sql, dag_id, run_id, task_id)
    print("", *xcom_report(task_id, rows), sep="\n")


def xcom_report(task_id: str, rows: list[tuple[str, str]]) -> list[str]:
    """The XCom a task pushed, from the xcom table's keys and JSON values. Keys starting with ``_`` are Airflow's
    and the provider's own (``_link_FlowRunLink``: the extra link's URL), not for downstream tasks: left out."""
    lines = [f"XCom the task `{task_id}` pushed (what downstream tasks read; Airflow's xcom table):"]
    for key, value in rows:
        if not key.startswith("_"):
            lines += xcom_lines(key, json.loads(value))
    return lines


def xcom_lines(key: str, value: Any) -> list[str]:
    """One XCom value as lines: a dictionary one field a line (null fields named on one line), anything else on
    one line; long values cut at VALUE_WIDTH, at most MAX_FIELDS fields."""
    if not isinstance(value, dict):
        return [f"  {key:<14} {shortened(value)}"]
    fields = [(name, field) for name, field in value.items() if field is not None]
    nulls = [name for name, field in value.items() if field is None]
    width = max((len(name) for name, _ in fields), default=0)
    what = "what the task returned" if key == "return_value" else "a dictionary"
    lines = [f"  {key:<14} {what}, {len(value)} fields:"]
    lines += [f"    {name:<{width}}  {shortened(field)}" for name, field in fields[:MAX_FIELDS]]
    if len(fields) > MAX_FIELDS:
        lines.append(f"    ... and {len(fields) - MAX_FIELDS} more fields")
    if nulls:
        lines.append(f"    {'(null)':<{width}}  {', '.join(nulls)}")
    return lines


def shortened(value: Any, width: int = VALUE_WIDTH) -> str:
    """A value as compact JSON, cut to ``width`` characters with a note of how long it was."""
    text = json.dumps(value, separators=(", ", ": "), ensure_ascii=False)
    if len(text) <= width:
        return text
    note = f"... ({len(text)} characters)"
    return text[: max(width - len(note), 0)] + note


def print_invoices(database: Path) -> int:
    """Print the invoices table the DAG loaded; the number of rows."""
    try:
        columns = "vendor, invoice_number, total, currency, lowest_confidence, run_id"
        rows = query(database, f"SELECT {columns} FROM invoices ORDER BY vendor")
    except sqlite3.OperationalError:  # no database file, or no table in it
        print(f"No table `invoices` in {database}: invoices_to_database did not create it.")
        return 0
    print(f"Table `invoices` in {database} (connection `invoices_db`):")
    print(f"the {len(rows)} rows invoices_to_database loaded, one per Extend run, from the outputs each run landed.")
    if rows:
        print(f"  {'vendor':<20} {'invoice':<10} {'total':>10} {'cur':<4} {'conf':>5}  Extend run")
    for vendor, number, total, currency, confidence, run_id in rows:
        print(f"  {vendor:<20} {number:<10} {total:>10.2f} {currency:<4} {confidence:>5.2f}  {run_id}")
    return len(rows)


def next_steps(bin_dir: Path, root: Path, cwd: Path) -> list[str]:
    """What a new user can try after the demo: commands that run as printed from ``cwd``."""
    emulator, airflow = shown(bin_dir / "flowruns-emulator", cwd), shown(bin_dir / "airflow", cwd)
    try_dir = Path(tempfile.gettempdir()) / "flowruns-try"
    dags = root / "example_dags"
    extend = json.dumps({"conn_type": "extend", "host": EMULATOR_DEFAULT_URL, "password": API_KEY})
    make_docs = "make docs" if root == cwd else f"cd {root} && make docs"
    return [
        f"  1. Read the docs: {shown(root / 'docs' / 'index.md', cwd)}, or build the site with `{make_docs}` and "
        f"open {shown(root / 'site' / 'index.html', cwd)}.",
        "  2. Start the emulator yourself and read its banner (its flows, its API key, connections to paste):",
        f"       {emulator}",
        "  3. With it running, run another example DAG from a second terminal: the Extend extraction",
        f"     ({shown(dags / 'extend_invoice_extraction.py', cwd)}) on a placeholder PDF:",
        f"       mkdir -p {try_dir}/data && printf '%s\\n' '%PDF-1.4' '%%EOF' > {try_dir}/data/doc.pdf",
        f"       export AIRFLOW_HOME={try_dir}/airflow AIRFLOW__CORE__LOAD_EXAMPLES=False",
        f"       export AIRFLOW__CORE__DAGS_FOLDER={dags} AIRFLOW_VAR_FLOWRUNS_DATA_DIR={try_dir}/data",
        f"       export AIRFLOW_CONN_EXTEND_DEFAULT='{extend}'",
        *proxy_bypass(),
        f"       {airflow} db migrate && {airflow} dags test extend_invoice_extraction",
        f"  4. Read the other example DAGs in {shown(dags, cwd)}/ "
        f"(explained in {shown(root / 'docs' / 'howto', cwd)}/).",
        f"  5. Point a connection at a real platform: {shown(root / 'docs' / 'connections.md', cwd)}.",
    ]


def proxy_bypass() -> list[str]:
    """The line keeping loopback off a proxy, where the environment names one (as `make demo` does for itself)."""
    if not any(os.environ.get(name) for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")):
        return []
    return ['       export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="$NO_PROXY"']


def shown(path: Path, cwd: Path) -> str:
    """``path`` relative to ``cwd`` when inside it, else absolute."""
    return str(path.relative_to(cwd)) if path.is_relative_to(cwd) and path != cwd else str(path)


if __name__ == "__main__":
    sys.exit(main())
