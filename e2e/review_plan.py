"""The plan of ``make e2e-review``: which document goes to which task, platform and review outcome.

Every case is one mapped task instance whose run stops for review (or, on ``confidence``, finishes with an
uncertain field) and stays there until the runner moves it: an answer in Airflow, a status forced in the
vendor's app through the emulator's control API, or both at the same instant.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from airflow_flowruns.platforms import facts_of
from airflow_flowruns.platforms.extend.emulator import EXTEND_INVOICE_WORKFLOW, EXTEND_REVIEW_WORKFLOW
from airflow_flowruns.platforms.noxus.emulator import NOXUS_REVIEW_WORKFLOW
from airflow_flowruns.platforms.tableflow.emulator import TABLEFLOW_REVIEW_FLOW
from airflow_flowruns.review.ask import Choice, options_for
from e2e.dags.flowruns_review_e2e import BATCH_REVIEW_TASK_ID, BATCH_TASK_ID, TASKS


@dataclass(frozen=True)
class Profile:
    """A platform as the plan uses it: its review flow, how a file is passed, and its raw final statuses."""

    review_flow: str
    file_field: str
    raw_status: dict[str, str]
    """The raw status the vendor's app ends a reviewed run with (``succeeded``, ``failed``), or keeps it in
    while in review (``review``)."""
    inputs: dict[str, Any] | None = None


PROFILES = {
    "tableflow": Profile(
        TABLEFLOW_REVIEW_FLOW, "document", {"succeeded": "completed", "failed": "failed", "review": "review"}
    ),
    "extend": Profile(
        EXTEND_REVIEW_WORKFLOW, "file", {"succeeded": "PROCESSED", "failed": "REJECTED", "review": "NEEDS_REVIEW"}
    ),
    "noxus": Profile(
        NOXUS_REVIEW_WORKFLOW,
        "document",
        {"succeeded": "completed", "failed": "failed", "review": "awaiting_human_feedback"},
        inputs={"instructions": "Extract the invoice"},
    ),
}
EDITABLE = ("extend",)
"""Platforms whose runs in review carry extracted fields to edit (the emulator gives TableFlow and Noxus runs
none before they complete)."""

SHARES = {
    ("answered", "accept"): 4,
    ("answered", "edit"): 4,
    ("answered", "reject"): 5,
    ("answered", "wait"): 2,
    ("vendor", "vendor"): 9,
    ("vendor", "race"): 7,
}
"""How the cases beyond the fixed ones are shared out (at the default 40 runs, exactly these numbers)."""
FIXED = (
    ("not_deferrable", "edit", "extend"),
    ("not_deferrable", "reject", "tableflow"),
    ("not_deferrable", "vendor", "noxus"),
    ("confidence", "edit", "extend"),
    ("confidence", "reject", "extend"),
    (BATCH_REVIEW_TASK_ID, "accept", "extend"),
    (BATCH_REVIEW_TASK_ID, "edit", "extend"),
    (BATCH_REVIEW_TASK_ID, "reject", "extend"),
    (BATCH_REVIEW_TASK_ID, "vendor", "extend"),
)
"""Cases every plan has: a task that is not deferrable, the confidence gate (Extend only) and the documents of
the batch, whose review task's map indexes follow the order the batch hands them over in (bound at run time)."""
HELD_BACK = ("not_deferrable", "confidence", BATCH_REVIEW_TASK_ID)
"""Tasks whose Required Actions stay open until the UI has been checked."""
RACES = (("accept", "succeeded"), ("reject", "failed"), ("accept", "failed"), ("reject", "succeeded"))
"""Answer and forced status of the both-at-once cases, in turn: agreeing, then disagreeing, so the task's
state tells which of the two decided."""
RACE_DELAYS = (0.0, 0.0, 3.0)
"""Seconds the answer of each race follows the forced status, in turn: mostly the same instant, sometimes
as the provider is closing the Required Action."""
MIN_RUNS = len(FIXED) + len(SHARES)


@dataclass(frozen=True)
class Case:
    """One mapped task instance and what the runner does to its review."""

    task_id: str
    map_index: int
    platform: str
    kind: str
    """accept, edit, reject, wait (then the vendor decides), vendor, or race (an answer and the vendor at once)."""
    answer: str | None
    forced: str | None
    """``succeeded`` or ``failed``: the final status forced in the vendor's app, if any."""
    document: str
    race_delay: float = 0.0
    """Seconds the answer of a race follows the forced status (0: the same instant)."""

    @property
    def ref(self) -> str:
        return f"{self.task_id}[{self.map_index}] {self.platform} {self.kind}"

    @property
    def label(self) -> str:
        return facts_of(self.platform).label

    @property
    def lands_outputs(self) -> bool:
        return any(task.task_id == self.task_id and task.lands_outputs for task in TASKS)

    @property
    def in_review(self) -> bool:
        return self.task_id != "confidence"

    def option(self, choice: str) -> str:
        """The Required Action's label of ``choice``."""
        return options_for(self.label, in_review=self.in_review)[Choice(choice)]

    @property
    def raw_status(self) -> str | None:
        return PROFILES[self.platform].raw_status[self.forced] if self.forced else None

    @property
    def final_raw_status(self) -> str:
        """The run's raw status at the end: as forced, finished (the confidence gate's), or still in review (an
        answer in Airflow leaves the run to the vendor's app)."""
        if self.task_id == "confidence":
            return PROFILES[self.platform].raw_status["succeeded"]
        return PROFILES[self.platform].raw_status[self.forced or "review"]

    @property
    def note(self) -> str:
        return f"e2e {self.kind} of {self.document}: the total does not match the purchase order"


def shares(total: int) -> dict[tuple[str, str], int]:
    """``total`` cases split by :data:`SHARES` (largest remainder), each kind at least once."""
    weights = sum(SHARES.values())
    exact = {kind: total * weight / weights for kind, weight in SHARES.items()}
    split = {kind: max(1, int(value)) for kind, value in exact.items()}
    for kind in sorted(exact, key=lambda k: exact[k] - int(exact[k]), reverse=True):
        if sum(split.values()) >= total:
            break
        split[kind] += 1
    return split


def make_plan(runs: int) -> list[Case]:
    """``runs`` cases: the fixed ones, then the shares, platforms in turn within each kind."""
    if runs < MIN_RUNS:
        raise ValueError(f"--runs must be at least {MIN_RUNS}, one case of each kind")
    wanted = [(task_id, kind, platform) for task_id, kind, platform in FIXED]
    for (task_id, kind), count in shares(runs - len(FIXED)).items():
        platforms = EDITABLE if kind == "edit" else tuple(PROFILES)
        wanted += [(task_id, kind, platforms[i % len(platforms)]) for i in range(count)]
    cases, indexes, races = [], Counter[str](), 0
    for task_id, kind, platform in wanted:
        index = indexes[task_id]
        indexes[task_id] += 1
        answer, forced, delay = _moves(kind, index, races)
        races += kind == "race"
        document = f"{task_id}-{index:02d}-{platform}-{kind}.pdf"
        cases.append(Case(task_id, index, platform, kind, answer, forced, document, delay))
    return cases


def _moves(kind: str, index: int, races: int) -> tuple[str | None, str | None, float]:
    if kind == "race":
        answer, forced = RACES[races % len(RACES)]
        return answer, forced, RACE_DELAYS[races % len(RACE_DELAYS)]
    if kind == "vendor":
        return None, "failed" if index % 2 else "succeeded", 0.0
    if kind == "wait":
        return "wait", "succeeded", 0.0
    return ("accept" if kind == "edit" else kind), None, 0.0


def bound(case: Case, items: dict[tuple[str, int], dict[str, Any]]) -> Case:
    """A batch document's case with the map index of the review task instance its Required Action names it in
    (the batch hands its documents over in an order of its own); any other case as it is."""
    if case.task_id != BATCH_REVIEW_TASK_ID:
        return case
    subject = f"Review {case.document}:"
    found = [
        index
        for (task_id, index), item in items.items()
        if task_id == case.task_id and item["subject"].startswith(subject)
    ]
    return replace(case, map_index=found[0]) if found else case


def conf_of(cases: list[Case], data: Path, landed: Path) -> dict[str, Any]:
    """The DAG run's conf: each mapped task's list of operator arguments, one per map index, and the batch's
    folder; writes the documents."""
    conf: dict[str, Any] = {task.task_id: [] for task in TASKS}
    conf[BATCH_TASK_ID] = f"{data / BATCH_TASK_ID}/"
    lands = {task.task_id for task in TASKS if task.lands_outputs}
    for case in sorted(cases, key=lambda c: (c.task_id, c.map_index)):
        profile = PROFILES[case.platform]
        folder = data / BATCH_TASK_ID if case.task_id == BATCH_REVIEW_TASK_ID else data
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / case.document
        path.write_bytes(b"%PDF-1.4\n% e2e review " + case.document.encode() + b"\n%%EOF\n")
        if case.task_id == BATCH_REVIEW_TASK_ID:
            continue
        flow = EXTEND_INVOICE_WORKFLOW if case.task_id == "confidence" else profile.review_flow
        entry: dict[str, Any] = {
            "flowruns_conn_id": f"{case.platform}_e2e",
            "flow_id": flow,
            "files": {profile.file_field: str(path)},
            "inputs": profile.inputs,
        }
        if case.task_id in lands:
            entry["outputs_to"] = str(landed / case.task_id / str(case.map_index))
        conf[case.task_id].append(entry)
    return conf
