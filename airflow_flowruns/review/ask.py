"""The Required Action for a run in review, and the decision an answer to it makes; no I/O.

Airflow keeps one Required Action per task instance, with a subject, a Markdown body, options and editable
parameters. The extracted fields are the parameters, defaulting to the extracted values; ``note`` carries the
reviewer's reason, and the provider's note when the review ended in the vendor's app instead.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.outputs.model import Output, RunOutputs
from airflow_flowruns.platforms.base import FlowRun

NOTE = "note"
"""The parameter holding the reviewer's reason (or the provider's closing note)."""
MAX_FIELDS = 50
"""Editable fields per Required Action; a run with more lists the rest in the body only."""
MAX_SHOWN_CHARS = 200
"""How much of one extracted value the body shows."""
EDITABLE_KINDS = frozenset({"field", "text", "data"})
"""The outputs a reviewer edits: extracted values; a class, a split or a file is shown, not edited."""


class Choice(StrEnum):
    WAIT = "wait"
    ACCEPT = "accept"
    REJECT = "reject"


@dataclass(frozen=True)
class Ask:
    """What the Required Action shows and offers."""

    subject: str
    body: str
    options: dict[Choice, str]
    """Each choice's label, as the reviewer reads it."""
    extracted: dict[str, Any]
    """The editable fields and their extracted values (the parameters' defaults)."""
    uncertain: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return list(self.options.values())

    def choice_of(self, label: str) -> Choice | None:
        return next((choice for choice, text in self.options.items() if text == label), None)

    def params(self) -> dict[str, dict[str, Any]]:
        """The parameters as Airflow's ``Param`` arguments: default value, JSON type and a description."""
        params = {
            name: {
                "value": value,
                "schema": {"type": _json_types(value)},
                "description": "Extracted value" + (" (uncertain)" if name in self.uncertain else ""),
            }
            for name, value in self.extracted.items()
        }
        params[NOTE] = {  # optional: Airflow's form disables every option while a required field is empty
            "value": "",
            "schema": {"type": ["string", "null"]},
            "description": "Why you reject the document, or any note for the record.",
        }
        return params


def threshold_of(value: float | None) -> float | None:
    """``review_below_confidence``: None, or a number in (0, 1]."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not 0 < value <= 1:
        raise FlowRunsConfigError(f"review_below_confidence must be a number above 0 and at most 1, not {value!r}.")
    return float(value)


def uncertain_fields(outputs: RunOutputs, threshold: float | None) -> list[str]:
    """The outputs whose confidence the platform gives and that is below ``threshold``."""
    if threshold is None:
        return []
    return [o.name for o in outputs.outputs if o.confidence is not None and o.confidence < threshold]


def build_ask(
    run: FlowRun,
    outputs: RunOutputs,
    platform_label: str,
    *,
    document: str | None = None,
    threshold: float | None = None,
    in_review: bool = True,
) -> Ask:
    """The Required Action for ``run``: in review at the vendor (``in_review``), or finished with uncertain
    fields under the confidence gate, where waiting for the vendor is no option."""
    what = document or run.id
    uncertain = uncertain_fields(outputs, threshold)
    editable = [o for o in outputs.outputs if o.kind in EDITABLE_KINDS and o.name != NOTE][:MAX_FIELDS]
    options = options_for(platform_label, in_review=in_review)
    why = "is waiting for review" if in_review else f"finished with fields below confidence {threshold:g}"
    subject = f"Review {what}: {platform_label} flow {run.flow_id or '?'}"
    return Ask(
        subject=subject[:200],
        body=_body(run, outputs, platform_label, f"`{what}` {why}", uncertain, in_review=in_review),
        options=options,
        extracted={o.name: o.value for o in editable},
        uncertain=[name for name in uncertain if any(o.name == name for o in editable)],
    )


def options_for(platform_label: str, *, in_review: bool) -> dict[Choice, str]:
    """The options offered: waiting for the vendor's review only while the run is in review there."""
    options = {Choice.ACCEPT: "Accept the extraction", Choice.REJECT: "Reject the document"}
    return {Choice.WAIT: f"Wait for the review in {platform_label}", **options} if in_review else options


@dataclass(frozen=True)
class Pending:
    """A review under way, as the task keeps it in XCom to resume on an answer: the run, the deadline, what
    the Required Action offered (the answer's edits are judged against the extracted values) and the document
    it names (a resumed operator no longer knows its files' names)."""

    flow_id: str | None
    run_id: str
    deadline: float
    in_review: bool
    extracted: dict[str, Any]
    document: str | None = None

    def to_xcom(self) -> dict[str, Any]:
        return {
            "flow_id": self.flow_id,
            "run_id": self.run_id,
            "deadline": self.deadline,
            "in_review": self.in_review,
            "extracted": self.extracted,
            "document": self.document,
        }

    @classmethod
    def from_xcom(cls, saved: Any) -> Pending | None:
        if not isinstance(saved, dict) or not isinstance(saved.get("run_id"), str):
            return None
        return cls(
            flow_id=saved.get("flow_id"),
            run_id=saved["run_id"],
            deadline=float(saved["deadline"]),
            in_review=bool(saved.get("in_review")),
            extracted=dict(saved.get("extracted") or {}),
            document=saved.get("document"),
        )

    def ask(self, platform_label: str) -> Ask:
        """The options and extracted values of the Required Action raised (its texts are not needed again)."""
        return Ask("", "", options_for(platform_label, in_review=self.in_review), self.extracted)


def _body(run: FlowRun, outputs: RunOutputs, label: str, why: str, uncertain: list[str], *, in_review: bool) -> str:
    link = f"[{run.id}]({run.url})" if run.url else f"`{run.id}`"
    lines = [f"The {label} run {link} of flow `{run.flow_id or '?'}` for {why}.", ""]
    if outputs.outputs:
        lines += ["| field | extracted | confidence |", "|---|---|---|"]
        lines += [_row(o, o.name in uncertain) for o in outputs.outputs]
    else:
        lines.append("The run has no extracted fields yet.")
    if uncertain:
        lines += ["", "Uncertain: " + ", ".join(f"`{name}`" for name in uncertain) + "."]
    if sum(o.kind in EDITABLE_KINDS for o in outputs.outputs) > MAX_FIELDS:
        lines += ["", f"Only the first {MAX_FIELDS} fields can be edited here."]
    if run.url:
        lines += ["", f"Open the run in {label}: {run.url}"]
    wait = f"; or wait for the review in {label}" if in_review else ""
    lines += ["", f"Accept to succeed the task with the fields as edited; reject (with a note) to fail it{wait}."]
    return "\n".join(lines)


def _row(output: Output, uncertain: bool) -> str:
    shown = json.dumps(output.value, default=str, ensure_ascii=False)
    if len(shown) > MAX_SHOWN_CHARS:
        shown = shown[: MAX_SHOWN_CHARS - 1] + "…"
    shown = shown.replace("|", "\\|").replace("\n", " ")
    confidence = "-" if output.confidence is None else f"{output.confidence:.2f}"
    return f"| `{output.name}` | {shown} | {confidence}{' ⚠' if uncertain else ''} |"


def _json_types(value: Any) -> list[str]:
    """The JSON Schema types a field accepts: its extracted value's type, and null (a field can be cleared)."""
    if isinstance(value, bool):
        kind = "boolean"
    elif isinstance(value, int | float):
        kind = "number"
    elif isinstance(value, str):
        kind = "string"
    elif isinstance(value, list):
        kind = "array"
    elif isinstance(value, dict):
        kind = "object"
    else:
        return ["null", "string", "number", "boolean", "array", "object"]
    return [kind, "null"]


@dataclass(frozen=True)
class Decision:
    """How a review ended: ``where`` is ``airflow`` or the platform's name; ``decision`` is ``accept``,
    ``reject`` or ``wait`` for an answer in Airflow, or the run's final state when the vendor decided."""

    where: str
    decision: str
    by: str | None = None
    at: str | None = None
    note: str | None = None
    edited: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each edited field's ``extracted`` and ``reviewed`` value."""

    def to_xcom(self) -> dict[str, Any]:
        return {
            "where": self.where,
            "decision": self.decision,
            "by": self.by,
            "at": self.at,
            "note": self.note,
            "edited": self.edited,
        }

    @property
    def reviewed_values(self) -> dict[str, Any]:
        return {name: change["reviewed"] for name, change in self.edited.items()}


def answer_decision(ask: Ask, answer: dict[str, Any]) -> Decision | None:
    """The decision a person's answer makes; None for an answer with no option of this ask (the provider's own
    closing answer has one, so it is a decision too: ``wait`` with its note)."""
    chosen = answer.get("chosen_options") or []
    choice = ask.choice_of(chosen[0]) if chosen else None
    if choice is None:
        return None
    given = answer.get("params_input") or {}
    edited = {
        name: {"extracted": value, "reviewed": given[name]}
        for name, value in ask.extracted.items()
        if name in given and given[name] != value
    }
    user = answer.get("responded_by_user") or {}
    note = given.get(NOTE)
    return Decision(
        where="airflow",
        decision=choice.value,
        by=(user.get("name") or user.get("id")) if isinstance(user, dict) else None,
        at=_iso(answer.get("responded_at")),
        note=note if isinstance(note, str) and note else None,
        edited=edited if choice is Choice.ACCEPT else {},
    )


def vendor_decision(run: FlowRun, platform_label: str) -> Decision:
    """The review ended in the vendor's app: the run's final state decides."""
    return Decision(
        where=run.platform,
        decision=run.state.value,
        at=_iso(run.ended_at),
        note=f"Decided in {platform_label}: the run ended {run.state.value} ({run.status}).",
    )


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value) if value else None


def assignees(value: Any) -> list[dict[str, str]] | None:
    """``review_assignees``: user names or ``{"id", "name"}`` mappings, as Airflow's Required Actions take them."""
    if value is None:
        return None
    items = [value] if isinstance(value, str | dict) else value
    if not isinstance(items, list | tuple):
        raise FlowRunsConfigError(f"review_assignees must be a user name or a list of them, not {value!r}.")
    users = []
    for item in items:
        if isinstance(item, str) and item:
            users.append({"id": item, "name": item})
        elif isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
            users.append({"id": item["id"], "name": str(item.get("name") or item["id"])})
        else:
            raise FlowRunsConfigError(
                f"review_assignees entry {item!r} is neither a user name nor a mapping with an 'id'."
            )
    return users
