"""The I/O-free parts of review in Airflow: the Required Action built from a run and its outputs, the decision an
answer makes, what lands, and how a batch hands its documents in review to a task each."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from airflow.sdk import DAG
from airflow.sdk.definitions.mappedoperator import MappedOperator

from airflow_flowruns.batch.results import BatchResult, judge
from airflow_flowruns.exceptions import FlowRunsConfigError, FlowRunsError
from airflow_flowruns.operators._batch_review import documents_in_review, handed_to_review
from airflow_flowruns.operators.batch import FlowRunBatchOperator
from airflow_flowruns.outputs.model import Output, RunOutputs, outputs_document
from airflow_flowruns.platforms.base import FlowRun, RunState
from airflow_flowruns.review.ask import (
    MAX_FIELDS,
    Pending,
    answer_decision,
    assignees,
    build_ask,
    threshold_of,
    uncertain_fields,
    vendor_decision,
)
from airflow_flowruns.sensors.flow_run import FlowRunSensor
from airflow_flowruns.waiting import OnReview

RUN = FlowRun(
    id="workflow_run_1",
    flow_id="workflow_invoice",
    platform="extend",
    state=RunState.NEEDS_REVIEW,
    status="NEEDS_REVIEW",
    url="https://dashboard.extend.ai/workflows/runs/workflow_run_1",
)
OUTPUTS = RunOutputs(
    outputs=[
        Output("total", "field", 1234.5, "Extract invoice", 0.41),
        Output("vendor", "field", "ACME | Co", "Extract invoice", 0.97),
        Output("paid", "field", None, "Extract invoice", None),
    ]
)


def answer(option: str, params: dict[str, Any] | None = None, user: str | None = "ana") -> dict[str, Any]:
    return {
        "chosen_options": [option],
        "params_input": params or {},
        "responded_at": datetime(2026, 12, 6, tzinfo=UTC),
        "responded_by_user": {"id": user, "name": user} if user else None,
    }


def test_the_required_action_shows_fields_confidence_and_the_link() -> None:
    ask = build_ask(RUN, OUTPUTS, "Extend", document="2024/inv-7.pdf", threshold=0.9)
    assert ask.subject == "Review 2024/inv-7.pdf: Extend flow workflow_invoice"
    assert ask.labels == ["Wait for the review in Extend", "Accept the extraction", "Reject the document"]
    assert "| `total` | 1234.5 | 0.41 ⚠ |" in ask.body and '| `vendor` | "ACME \\| Co" | 0.97 |' in ask.body
    assert "Uncertain: `total`." in ask.body and str(RUN.url) in ask.body
    params = ask.params()
    assert params["total"]["value"] == 1234.5 and params["total"]["schema"]["type"] == ["number", "null"]
    assert "uncertain" in params["total"]["description"] and params["note"]["value"] == ""
    assert len(params["paid"]["schema"]["type"]) == 6  # a null extracted value takes any JSON value


def test_a_finished_run_offers_no_wait_and_long_runs_are_capped() -> None:
    many = RunOutputs(outputs=[Output(f"f{n}", "field", "x" * 500, None, 0.5) for n in range(MAX_FIELDS + 5)])
    ask = build_ask(
        RUN.model_copy(update={"state": RunState.SUCCEEDED}), many, "Extend", threshold=0.9, in_review=False
    )
    assert ask.labels == ["Accept the extraction", "Reject the document"]
    assert len(ask.extracted) == MAX_FIELDS and f"Only the first {MAX_FIELDS} fields" in ask.body
    assert "finished with fields below confidence 0.9" in ask.body and "x" * 200 not in ask.body


def test_an_accept_keeps_only_the_fields_the_reviewer_changed() -> None:
    ask = build_ask(RUN, OUTPUTS, "Extend")
    shown = {"total": 1234.5, "vendor": "ACME | Co", "paid": None}
    decision = answer_decision(ask, answer("Accept the extraction", {**shown, "total": 1243.5, "note": "PO says so"}))
    assert decision is not None
    assert decision.to_xcom() == {
        "where": "airflow",
        "decision": "accept",
        "by": "ana",
        "at": "2026-12-06T00:00:00+00:00",
        "note": "PO says so",
        "edited": {"total": {"extracted": 1234.5, "reviewed": 1243.5}},
    }


def test_a_reject_keeps_no_edits_and_an_unknown_option_is_no_decision() -> None:
    ask = build_ask(RUN, OUTPUTS, "Extend")
    rejected = answer_decision(ask, answer("Reject the document", {"total": 1, "note": "duplicate"}))
    assert rejected is not None and (rejected.decision, rejected.edited, rejected.note) == ("reject", {}, "duplicate")
    assert answer_decision(ask, answer("Approve")) is None
    assert answer_decision(ask, {"chosen_options": []}) is None


def test_the_vendors_decision_says_where_it_was_taken() -> None:
    ended = RUN.model_copy(update={"state": RunState.FAILED, "status": "REJECTED"})
    decision = vendor_decision(ended, "Extend")
    assert (decision.where, decision.decision) == ("extend", "failed")
    assert decision.note == "Decided in Extend: the run ended failed (REJECTED)."


def test_reviewed_values_land_beside_the_extracted_ones() -> None:
    ask = build_ask(RUN, OUTPUTS, "Extend")
    decision = answer_decision(ask, answer("Accept the extraction", {"total": 99.0}))
    assert decision is not None
    document = outputs_document(RUN, OUTPUTS, decision)
    total = next(o for o in document["outputs"] if o["name"] == "total")
    assert (total["value"], total["initial_value"], total["reviewed_value"]) == (99.0, 1234.5, 99.0)
    assert "initial_value" not in next(o for o in document["outputs"] if o["name"] == "vendor")
    assert document["reviewed"] is True and document["review"]["decision"] == "accept"
    assert "review" not in outputs_document(RUN, OUTPUTS)


def test_uncertain_fields_and_the_threshold() -> None:
    assert uncertain_fields(OUTPUTS, 0.9) == ["total"] and uncertain_fields(OUTPUTS, None) == []
    assert threshold_of(None) is None and threshold_of(1) == 1.0
    bad_values: list[Any] = [0, 1.5, float("nan"), True, "0.9"]
    for bad in bad_values:
        with pytest.raises(FlowRunsConfigError, match="review_below_confidence"):
            threshold_of(bad)


def test_assignees_take_names_or_mappings() -> None:
    assert assignees("ana") == [{"id": "ana", "name": "ana"}]
    assert assignees(["ana", {"id": "7", "name": "Bo"}, {"id": "8"}]) == [
        {"id": "ana", "name": "ana"},
        {"id": "7", "name": "Bo"},
        {"id": "8", "name": "8"},
    ]
    assert assignees(None) is None
    for bad in ([""], [{"name": "x"}], 7):
        with pytest.raises(FlowRunsConfigError, match="review_assignees"):
            assignees(bad)


def test_a_pending_review_survives_xcom() -> None:
    pending = Pending("flow", "run", 1.5e9, True, {"total": 1})
    assert Pending.from_xcom(pending.to_xcom()) == pending
    assert Pending.from_xcom(None) is None and Pending.from_xcom({"run_id": 3}) is None
    assert pending.ask("Extend").labels[0] == "Wait for the review in Extend"


def test_a_batch_hands_its_documents_in_review_to_a_mapped_review_task() -> None:
    with DAG("archive", schedule=None) as dag:
        batch = FlowRunBatchOperator(
            task_id="extract",
            flow_id="f",
            flowruns_conn_id="c",
            documents="/archive/",
            on_review="airflow",
            max_open_reviews=5,
            deferrable=True,
        )
    assert dag.task_ids == ["extract", "extract_in_review", "extract_review"]
    review = dag.get_task("extract_review")
    assert isinstance(review, MappedOperator)
    assert review.operator_class is FlowRunSensor and review.partial_kwargs["max_active_tis_per_dagrun"] == 5
    assert review.partial_kwargs["on_review"] == "airflow" and review.partial_kwargs["deferrable"] is True
    assert batch.downstream_task_ids == {"extract_in_review"}
    with DAG("plain", schedule=None) as plain:
        FlowRunBatchOperator(task_id="extract", flow_id="f", flowruns_conn_id="c", documents="/archive/")
    assert plain.task_ids == ["extract"]


def test_the_hand_off_lists_each_document_in_review_once() -> None:
    result = BatchResult(4)
    for key, state, run in [("a", "needs_review", "r1"), ("b", "succeeded", "r2"), ("c", "needs_review", "r3")]:
        result.note(key, state, run)
    assert handed_to_review(result, "f") == [
        {"run_id": "r1", "flow_id": "f", "document": "a"},
        {"run_id": "r3", "flow_id": "f", "document": "c"},
    ]

    class Ti:
        def xcom_pull(self, task_ids: str, key: str) -> Any:
            return [{"run_id": "r1"}] if (task_ids, key) == ("extract", "flowruns_review_documents") else None

    assert documents_in_review("extract", ti=Ti()) == [{"run_id": "r1"}]
    assert documents_in_review("other", ti=Ti()) == []


def test_documents_handed_to_review_do_not_fail_the_batch() -> None:
    result = BatchResult(3, Counter({"succeeded": 1, "needs_review": 2}))
    judge(result, "settled", OnReview.AIRFLOW, max_failed=0, min_succeeded=3)
    with pytest.raises(FlowRunsError, match="over max_failed=0"):
        judge(result, "settled", OnReview.FAIL, max_failed=0, min_succeeded=None)
