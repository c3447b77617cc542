"""Models of the Noxus answers the SDK does not model, for ``check_models.py`` (run in the SDK virtualenv).

Each is built from the SDK's own ``Run`` where it can be and otherwise transcribed from the source named on
it. Where a field is null until something happens (a workflow not deleted has no ``deleted_at``), it may
be null; nothing else here goes beyond what the source shows.
"""

from typing import Literal

from noxus_sdk.resources.runs import Run
from pydantic import BaseModel


class EmbeddedWorkflow(BaseModel):
    """The ``workflow`` a run embeds: vendor-docs/noxus-get-paginated-runs.txt (``GET /v1/runs`` items)."""

    id: str
    group_id: str
    name: str
    type: Literal["flow", "handler", "ingestion"]
    definition: dict
    last_updated_at: str
    last_run_at: str | None
    created_at: str
    deleted_at: str | None
    runs_count: int
    author_name: str | None
    description: str | None
    saved: bool
    error_handler: str | None


class RunWithWorkflow(Run):
    """``GET /v1/runs/{id}``: the SDK's ``Run`` (the same run its workflow route reads) plus what api-notes §3
    says this route adds, ``definitions``, ``source`` and the embedded ``workflow``, typed as the reference
    page's listing items have them."""

    definitions: dict
    source: str
    workflow: EmbeddedWorkflow


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    """A 422: ``{"detail": [{"loc", "msg", "type"}]}`` (api-notes §3, the shape of a FastAPI backend)."""

    detail: list[ValidationIssue]


class ErrorBody(BaseModel):
    """Any other error: ``{"detail": "<text>"}``, the FastAPI shape of the backend whose 422 is above; the
    SDK's ``errors._extract_detail`` reads ``detail`` first."""

    detail: str
