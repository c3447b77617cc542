"""The checks of ``make e2e-review``, on what Airflow kept of every task instance, on its Required Action, on
the landed ``outputs.json`` and on the emulator's record of every run; and the check of Airflow's UI.

Per case: the task ended as its decision says (an answer in Airflow: accept succeeds, reject fails; the
vendor's app: its final status decides; both at once: the one recorded first, which ``review.where`` names),
in exactly one try; XCom ``review`` names where, what, who and the edits; accepted fields land edited in
``outputs.json``; a rejection's note is in the task's log; the Required Action holds the deciding answer,
or the provider's closing note. Over all: every Required Action answered, none open anywhere, and every
task instance ran exactly one run on the platform, the one its XCom names.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from airflow_flowruns.operators.flow_run import task_key
from airflow_flowruns.platforms.start import DOCUMENT_KEY_FIELD, KEY_NAME_SEPARATOR, TASK_KEY_FIELD
from e2e.dags.flowruns_review_e2e import BATCH_REVIEW_TASK_ID
from e2e.harness import Outcome, counts
from e2e.review_plan import Case
from e2e.stack import E2EError, read_only
from e2e.ui import wait_until

KEEPS_METADATA = ("tableflow", "extend")
"""Platforms whose runs carry the task key in their metadata (Noxus keeps none)."""


@dataclass
class Action:
    """What the runner did to one case's review."""

    run_id: str | None = None
    answer_status: int | None = None
    """200 when Airflow recorded the answer, 409 when the Required Action was already closed."""
    answered_at: float | None = None
    answer_retries: int = 0
    """Answers sent again after SQLite refused a write that met the provider's closing write."""
    forced_at: float | None = None
    extracted: dict[str, Any] = field(default_factory=dict)
    edits: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskRecord:
    """What Airflow kept of one task instance."""

    state: str
    try_number: int
    earlier_tries: int
    review: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    flow_run_id: str | None = None
    log: str = ""


Records = dict[tuple[str, int], TaskRecord]
MISSING = TaskRecord("missing", 0, 0)
"""The record of a task instance Airflow does not have."""


@dataclass(frozen=True)
class Expected:
    state: str
    where: str
    decision: str
    person_answered: bool
    """The Required Action holds a person's answer (otherwise the provider's closing note)."""


def expected(case: Case, action: Action) -> Expected:
    """The rule: a person's answer recorded first decides; otherwise the vendor's final status does."""
    if case.kind in ("accept", "edit", "reject") or (case.kind == "race" and action.answer_status == 200):
        assert case.answer is not None
        return Expected("success" if case.answer == "accept" else "failed", "airflow", case.answer, True)
    assert case.forced is not None
    return Expected(
        "success" if case.forced == "succeeded" else "failed", case.platform, case.forced, case.kind == "wait"
    )


def read_records(home: Path, dag_id: str, run_id: str) -> Records:
    """State, tries, XComs and log of every mapped task instance of the DAG run."""
    where = "dag_id = ? AND run_id = ? AND map_index >= 0"
    with read_only(home / "airflow.db") as db:
        rows = db.execute(
            f"SELECT task_id, map_index, state, try_number FROM task_instance WHERE {where}", (dag_id, run_id)
        )
        records = {(t, int(i)): TaskRecord(str(state), int(tries), 0) for t, i, state, tries in rows.fetchall()}
        history = db.execute(f"SELECT task_id, map_index FROM task_instance_history WHERE {where}", (dag_id, run_id))
        for task_id, index in history.fetchall():
            if (task_id, index) in records:
                records[(task_id, index)].earlier_tries += 1
        xcoms = db.execute(
            f"SELECT task_id, map_index, key, value FROM xcom WHERE {where}", (dag_id, run_id)
        ).fetchall()
    for task_id, index, key, value in xcoms:
        record = records.get((task_id, index))
        if record is None:
            continue
        loaded = json.loads(value) if value else None
        if key == "review":
            record.review = loaded
        elif key == "return_value":
            record.result = loaded
        elif key == "flow_run_id":
            record.flow_run_id = loaded
    for (task_id, index), record in records.items():
        folder = home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}" / f"map_index={index}"
        record.log = "\n".join(path.read_text(errors="replace") for path in sorted(folder.glob("attempt=*.log")))
    return records


def check_cases(
    out: Outcome, cases: list[Case], actions: dict[str, Action], records: Records, items: dict[tuple[str, int], Any]
) -> None:
    problems: list[str] = []
    decided: Counter[str] = Counter()
    for case in cases:
        record, action = records.get((case.task_id, case.map_index)), actions[case.document]
        item = items.get((case.task_id, case.map_index))
        if record is None or item is None:
            problems.append(f"{case.ref}: no task instance or no Required Action")
            continue
        want = expected(case, action)
        decided[f"{case.kind} -> {want.where if want.where == 'airflow' else 'vendor'} {want.decision}"] += 1
        problems += [f"{case.ref}: {p}" for p in case_problems(case, action, record, item, want)]
    states = Counter(record.state for record in records.values())
    races = [actions[c.document].answer_status for c in cases if c.kind == "race"]
    out.figure(f"task instances: {len(records)}, final states {counts(states)}")
    out.figure(f"decisions as the rule has them: {counts(decided)}")
    out.figure(
        f"both at once: {races.count(200)} answers recorded before the provider closed the Required Action, "
        f"{races.count(409)} refused (409) after it; "
        f"{sum(a.answer_retries for a in actions.values())} sent again after SQLite refused a simultaneous write"
    )
    landed = [c for c in cases if c.lands_outputs and records.get((c.task_id, c.map_index), MISSING).state == "success"]
    edited = sum(1 for c in landed if actions[c.document].edits)
    out.figure(f"outputs.json checked for {len(landed)} tasks that succeeded and landed, {edited} with fields edited")
    out.figure(f"cases whose task, XCom, outputs.json, log or Required Action differ from the rule: {len(problems)}")
    out.require(len(records) == len(cases), f"{len(records)} task instances for {len(cases)} cases")
    out.require(not problems, f"cases that differ from the rule: {problems[:15]}")


def case_problems(case: Case, action: Action, record: TaskRecord, item: dict[str, Any], want: Expected) -> list[str]:
    found = []
    if record.state != want.state:
        found.append(f"task {record.state}, the rule says {want.state}")
    if record.try_number != 1 or record.earlier_tries:
        found.append(f"{record.try_number} tries ({record.earlier_tries} in the history), not one")
    review = record.review or {}
    if (review.get("where"), review.get("decision")) != (want.where, want.decision):
        found.append(f"XCom review {review.get('where')}/{review.get('decision')}, not {want.where}/{want.decision}")
    wanted_edits = {
        name: {"extracted": action.extracted[name], "reviewed": value} for name, value in action.edits.items()
    }
    if review.get("edited", {}) != (wanted_edits if want.decision == "accept" else {}):
        found.append(f"XCom review.edited {review.get('edited')}, not {wanted_edits}")
    if want.where == "airflow" and not review.get("by"):
        found.append("XCom review names no reviewer")
    if want.decision == "reject" and (review.get("note") != case.note or case.note not in record.log):
        found.append("the reviewer's note is missing from XCom review or from the task's log")
    if want.where != "airflow" and not str(review.get("note")).startswith(f"Decided in {case.label}"):
        found.append(f"XCom review.note {review.get('note')!r}")
    if case.kind == "edit" and not action.edits:
        found.append("the Required Action offered no field to edit")
    if record.state == "success":
        found += result_problems(record, review, wanted_edits, only_edits=want.where == "airflow")
        if case.lands_outputs and not (record.result or {}).get("landing"):
            found.append("the outputs did not land (no landing in the return value)")
    if not str(item.get("subject")).startswith(f"Review {case.document}:"):
        found.append(f"the Required Action's subject {item.get('subject')!r} does not name the document")
    return found + item_problems(case, item, want)


def result_problems(
    record: TaskRecord, review: dict[str, Any], edits: dict[str, dict[str, Any]], *, only_edits: bool
) -> list[str]:
    """The return value carries the decision; landed outputs carry it too, each edited field as reviewed beside
    its extracted value, and (``only_edits``: decided in Airflow) no other field marked reviewed."""
    result = record.result or {}
    found = [] if result.get("review") == review else [f"return value's review {result.get('review')}"]
    landing = result.get("landing")
    if landing is None:
        return found
    path = Path(landing["path"]) / "outputs.json"
    if not path.exists():
        return [*found, f"no outputs.json at {path}"]
    document = json.loads(path.read_text())
    if document.get("review") != review:
        found.append(f"outputs.json review {document.get('review')}")
    landed = {o["name"]: o for o in document.get("outputs", []) if "reviewed_value" in o}
    for name, change in edits.items():
        entry = landed.get(name, {})
        got = (entry.get("value"), entry.get("initial_value"), entry.get("reviewed_value"))
        if got != (change["reviewed"], change["extracted"], change["reviewed"]):
            found.append(f"outputs.json {name!r} value/initial_value/reviewed_value {got}, edited {change}")
    if only_edits and set(landed) != set(edits):
        found.append(f"outputs.json marks {sorted(landed)} reviewed, the reviewer edited {sorted(edits)}")
    return found


def item_problems(case: Case, item: dict[str, Any], want: Expected) -> list[str]:
    """The Required Action holds the answer that decided, a person's wait, or the provider's closing note."""
    if not item.get("response_received"):
        return ["the Required Action is still open"]
    chosen, by = item.get("chosen_options"), item.get("responded_by_user")
    note = (item.get("params_input") or {}).get("note") or ""
    if want.person_answered:
        assert case.answer is not None
        if chosen != [case.option(case.answer)] or by is None:
            return [f"the Required Action holds {chosen} by {by}, not the person's {case.answer}"]
        return [] if case.answer != "reject" or note == case.note else [f"the Required Action's note is {note!r}"]
    if chosen != [case.option("wait")] or by is not None or not note.startswith(f"Decided in {case.label}"):
        return [f"the Required Action holds {chosen} by {by} with note {note!r}, not the provider's closing note"]
    return []


def check_items(out: Outcome, cases: list[Case], items: dict[tuple[str, int], Any], still_open: int) -> None:
    answered = [item for item in items.values() if item.get("response_received")]
    by_person = sum(1 for item in answered if item.get("responded_by_user"))
    out.figure(
        f"Required Actions: {len(items)} for {len(cases)} cases, {len(answered)} answered ({by_person} by a person, "
        f"{len(answered) - by_person} closed by the provider); open in any DAG at the end: {still_open}"
    )
    out.require(len(items) == len(cases), f"{len(items)} Required Actions for {len(cases)} cases")
    out.require(len(answered) == len(items), f"{len(items) - len(answered)} Required Actions without a response")
    out.require(still_open == 0, f"{still_open} Required Actions still open at the end")


def document_of(run: dict[str, Any]) -> str:
    """The name of the document a run of the emulator was started with."""
    files = run.get("uploads") or run.get("files") or [{}]
    return str(files[0].get("filename")).rpartition(KEY_NAME_SEPARATOR)[2]  # a batch's upload is "{key}~{name}"


def check_runs(
    out: Outcome, cases: list[Case], runs: list[dict[str, Any]], records: Records, dag_id: str, run_id: str
) -> None:
    """Exactly one run per task instance, carrying its task key where the platform keeps metadata."""
    by_document: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_document.setdefault(document_of(run), []).append(run)
    wrong = []
    for case in cases:
        found = by_document.pop(case.document, [])
        record = records.get((case.task_id, case.map_index))
        if len(found) != 1:
            wrong.append(f"{case.ref}: {len(found)} runs")
        elif case.platform in KEEPS_METADATA and run_key(found[0]) != expected_key(case, dag_id, run_id):
            wrong.append(f"{case.ref}: run {found[0]['id']} carries the key {run_key(found[0])!r}")
        elif record is None or record.flow_run_id != found[0]["id"]:
            wrong.append(f"{case.ref}: XCom names run {record and record.flow_run_id}, not {found[0]['id']}")
    moved = [
        f"{case.ref}: {run['status']}"
        for case in cases
        for run in [r for r in runs if document_of(r) == case.document][:1]
        if run["status"] != case.final_raw_status
    ]
    statuses = Counter(f"{run['platform']} {run['status']}" for run in runs)
    out.figure(f"runs on the emulator: {len(runs)} ({counts(statuses)})")
    out.figure(
        f"task instances with exactly one run, the one their XCom names: {len(cases) - len(wrong)} of {len(cases)}"
    )
    out.figure(f"runs the provider moved on the platform (cancelled, stopped, ...): {len(moved)}")
    out.require(not wrong, f"task instances without exactly their one run: {wrong[:10]}")
    out.require(not moved, f"runs not as the vendor's app left them: {moved[:10]}")
    out.require(not by_document, f"runs of no planned document: {sorted(by_document)[:10]}")


def run_key(run: dict[str, Any]) -> Any:
    """The key a run carries in its metadata: its task's, or its batch document's."""
    metadata = run.get("metadata") or {}
    return metadata.get(DOCUMENT_KEY_FIELD) or metadata.get(TASK_KEY_FIELD)


def expected_key(case: Case, dag_id: str, run_id: str) -> str:
    """The key a case's run must carry: the batch document's key, or the task key of the task instance."""
    if case.task_id == BATCH_REVIEW_TASK_ID:
        return case.document
    ti = SimpleNamespace(dag_id=dag_id, task_id=case.task_id, run_id=run_id, map_index=case.map_index)
    return task_key({"ti": ti})  # type: ignore[typeddict-item]


def check_required_actions(
    driver: WebDriver, url: str, case: Case, item: dict[str, Any], run_url: str, shots: Path
) -> list[str]:
    """Airflow's Required Actions page lists ``case``'s item with a subject naming its document; the item, opened
    from there, shows the extracted fields as inputs holding the extracted values, links to the run, and lets
    the reviewer accept as is."""
    subject = f"Review {case.document}:"
    driver.get(f"{url}/required_actions")
    wait_until(
        driver, "the Required Actions page", lambda d: d.find_elements(By.XPATH, "//a[starts-with(., 'Review ')]")
    )
    problems = []
    try:
        links = wait_until(
            driver,
            f"a Required Action whose subject names {case.document}",
            lambda d: d.find_elements(By.XPATH, f"//a[starts-with(normalize-space(.), {json.dumps(subject)})]"),
        )
    except E2EError as exc:  # checked all the same, opened by its address
        problems.append(str(exc))
        ti = item["task_instance"]
        driver.save_screenshot(str(shots / "required-actions.png"))
        path = f"dags/{ti['dag_id']}/runs/{ti['dag_run_id']}/tasks/{case.task_id}/mapped/{case.map_index}"
        driver.get(f"{url}/{path}/required_actions")
    else:
        driver.save_screenshot(str(shots / "required-actions.png"))
        links[0].click()
    extracted = {name: spec.get("value") for name, spec in item["params"].items() if name != "note"}
    inputs = wait_until(
        driver,
        f"the form of {case.document}'s Required Action",
        lambda d: (
            {e.get_attribute("name"): e for e in d.find_elements(By.CSS_SELECTOR, "input[name^=element_]")}
            if d.find_elements(By.CSS_SELECTOR, "input[name=element_note]")
            else None
        ),
    )
    driver.save_screenshot(str(shots / "required-action.png"))
    for name, value in extracted.items():
        shown = inputs.get(f"element_{name}")
        if shown is None:
            problems.append(f"{case.document}: no input for the extracted field {name!r}")
        elif not _same(shown.get_attribute("value"), value):
            problems.append(f"{case.document}: {name!r} shows {shown.get_attribute('value')!r}, extracted {value!r}")
    if run_url not in [a.get_attribute("href") for a in driver.find_elements(By.TAG_NAME, "a")]:
        problems.append(f"{case.document}: no link to the run {run_url}")
    accept = driver.find_elements(
        By.CSS_SELECTOR, f"button[data-testid={json.dumps('hitl-option-' + case.option('accept'))}]"
    )
    if accept:
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", accept[0])
        driver.save_screenshot(str(shots / "required-action-options.png"))
    if not accept or not accept[0].is_enabled():
        problems.append(
            f"{case.document}: the option {case.option('accept')!r} cannot be chosen with the fields as extracted"
        )
    return problems


def _same(shown: str | None, value: Any) -> bool:
    """An input's text against an extracted value (a number input shows 1234.5 as "1234.5", perhaps grouped)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float((shown or "").replace(",", "")) == float(value)
        except ValueError:
            return False
    return (shown or "") == str(value)
