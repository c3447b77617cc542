"""What the emulator serves: keys, flows and how their runs progress. Loaded from JSON or defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from airflow_flowruns.emulator.faults import FaultMode

TABLEFLOW_RECONCILIATION_FLOW = "dk4g1tUg1uHLs8YU"
TABLEFLOW_REVIEW_FLOW = "rv7Qm2ReviewFlow0"
TABLEFLOW_FAILING_FLOW = "fa1LedFlow000000"
TABLEFLOW_SMALL_FILE_FLOW = "sm4llFileFlow000"
TABLEFLOW_LARGE_FILE_FLOW = "b1gUploadFlow000"
TABLEFLOW_INACTIVE_FLOW = "in4ctiveFlow0000"

MIB = 1024 * 1024
DAY = 24 * 60 * 60.0


class Scenario(BaseModel):
    """How a run progresses: processing, optionally review, then its outcome."""

    queued_seconds: float = Field(0.0, ge=0.0, le=DAY)
    processing_seconds: float = Field(1.0, ge=0.0, le=DAY)
    processing_jitter_seconds: float = Field(0.0, ge=0.0, le=DAY)
    """Each run adds a uniform random share of this to processing_seconds: runs finish at random times."""
    review: bool = False
    review_seconds: float | None = Field(None, ge=0.0, le=DAY)
    """How long a run stays in review; None: until the control API moves it on."""
    outcome: Literal["completed", "failed"] = "completed"
    error: str | None = Field(None, max_length=64 * 1024)


class TableFlowFileField(BaseModel):
    key: str
    name: str
    required: bool = False
    file_types: list[str] = Field(default_factory=lambda: ["pdf", "image"])
    max_file_size: int = 50 * MIB


class TableFlowFlow(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    workspace_id: str = "ws_emulator"
    name: str
    description: str = ""
    active: bool = True
    created_at: str = "2026-01-05T09:00:00Z"
    updated_at: str = "2026-01-05T09:00:00Z"
    file_fields: list[TableFlowFileField]
    steps: list[dict[str, Any]] = Field(
        default_factory=lambda: [
            {"id": "step_1", "title": "Extract", "description": "", "type": "extraction", "order": 1, "config": {}}
        ]
    )
    scenario: Scenario = Field(default_factory=Scenario)

    def api_object(self) -> dict[str, Any]:
        """The flow as the API returns it: emulator-only fields left out."""
        data = self.model_dump(exclude={"scenario", "file_fields"})
        data["file_input_config"] = {"file_fields": [f.model_dump() for f in self.file_fields]}
        return data


def _document(max_size: int = 50 * MIB) -> list[TableFlowFileField]:
    return [TableFlowFileField(key="document", name="Document", required=True, max_file_size=max_size)]


def _default_tableflow_flows() -> list[TableFlowFlow]:
    return [
        TableFlowFlow(
            id=TABLEFLOW_RECONCILIATION_FLOW,
            name="PO reconciliation",
            file_fields=[
                TableFlowFileField(key="purchase_order", name="Purchase order", required=True, file_types=["pdf"]),
                TableFlowFileField(key="invoice", name="Invoice", required=True),
                TableFlowFileField(key="attachments", name="Attachments"),
            ],
            steps=[
                {"id": "step_1", "title": "Extract", "description": "", "type": "extraction", "order": 1, "config": {}},
                {
                    "id": "step_2",
                    "title": "Reconcile",
                    "description": "",
                    "type": "reconciliation",
                    "order": 2,
                    "config": {},
                },
            ],
        ),
        TableFlowFlow(
            id=TABLEFLOW_REVIEW_FLOW,
            name="Invoice with review",
            file_fields=_document(),
            scenario=Scenario(review=True),
        ),
        TableFlowFlow(
            id=TABLEFLOW_FAILING_FLOW,
            name="Always fails",
            file_fields=_document(),
            scenario=Scenario(outcome="failed", error="Extraction failed: the document is unreadable"),
        ),
        TableFlowFlow(id=TABLEFLOW_SMALL_FILE_FLOW, name="Small files only", file_fields=_document(MIB)),
        TableFlowFlow(id=TABLEFLOW_LARGE_FILE_FLOW, name="Large scans", file_fields=_document(1024 * MIB)),
        TableFlowFlow(id=TABLEFLOW_INACTIVE_FLOW, name="Retired", active=False, file_fields=_document()),
    ]


class TableFlowConfig(BaseModel):
    flows: list[TableFlowFlow] = Field(default_factory=_default_tableflow_flows)


EXTEND_INVOICE_WORKFLOW = "workflow_invoice"
EXTEND_REVIEW_WORKFLOW = "workflow_review"
EXTEND_FAILING_WORKFLOW = "workflow_failing"
EXTEND_SPLIT_WORKFLOW = "workflow_split"
ExtendStep = Literal["CLASSIFY", "EXTRACT", "SPLIT"]


def _invoice_steps() -> list[ExtendStep]:
    return ["CLASSIFY", "EXTRACT"]


class ExtendWorkflow(BaseModel):
    id: str
    name: str
    version: str = "1"
    scenario: Scenario = Field(default_factory=Scenario)
    steps: list[ExtendStep] = Field(default_factory=_invoice_steps)
    """The steps whose results the run's ``stepRuns`` carry (see emulator/extend_outputs.py)."""
    split_file_bytes: int = 64 * 1024
    """Size of each file a SPLIT step produces."""


def _default_extend_workflows() -> list[ExtendWorkflow]:
    return [
        ExtendWorkflow(id=EXTEND_INVOICE_WORKFLOW, name="Invoice extraction", scenario=Scenario(queued_seconds=0.2)),
        ExtendWorkflow(id=EXTEND_REVIEW_WORKFLOW, name="Invoice with review", scenario=Scenario(review=True)),
        ExtendWorkflow(id=EXTEND_SPLIT_WORKFLOW, name="Invoice packet split", steps=["SPLIT", "EXTRACT"]),
        ExtendWorkflow(
            id=EXTEND_FAILING_WORKFLOW,
            name="Always fails",
            scenario=Scenario(outcome="failed", error="OCR_FAILED: the document could not be read"),
        ),
    ]


class ExtendConfig(BaseModel):
    workflows: list[ExtendWorkflow] = Field(default_factory=_default_extend_workflows)


NOXUS_DOCUMENT_WORKFLOW = "5f0c7d1e-0000-4000-8000-00000000d0c1"
NOXUS_REVIEW_WORKFLOW = "5f0c7d1e-0000-4000-8000-0000000f33d0"
NOXUS_FAILING_WORKFLOW = "5f0c7d1e-0000-4000-8000-00000000fa11"


class NoxusInput(BaseModel):
    label: str
    kind: Literal["file", "text"] = "text"
    required: bool = True


class NoxusWorkflow(BaseModel):
    id: str
    name: str
    inputs: list[NoxusInput] = Field(
        default_factory=lambda: [NoxusInput(label="document", kind="file"), NoxusInput(label="instructions")]
    )
    scenario: Scenario = Field(default_factory=Scenario)


def _default_noxus_workflows() -> list[NoxusWorkflow]:
    return [
        NoxusWorkflow(id=NOXUS_DOCUMENT_WORKFLOW, name="Document summary", scenario=Scenario(queued_seconds=0.2)),
        NoxusWorkflow(id=NOXUS_REVIEW_WORKFLOW, name="Summary with approval", scenario=Scenario(review=True)),
        NoxusWorkflow(
            id=NOXUS_FAILING_WORKFLOW,
            name="Always fails",
            scenario=Scenario(outcome="failed", error="Node 'Extract text' failed: unsupported file"),
        ),
    ]


class NoxusConfig(BaseModel):
    workflows: list[NoxusWorkflow] = Field(default_factory=_default_noxus_workflows)


STACKAI_ORG = "org_emulator"
STACKAI_FLOW = "flow_contract_review"
STACKAI_BIG_OUTPUT_FLOW = "flow_long_report"
STACKAI_FAILING_FLOW = "flow_failing"


class StackAIFlow(BaseModel):
    id: str
    name: str
    document_nodes: list[str] = Field(default_factory=lambda: ["doc-0"])
    output_bytes: int = 0
    """Padding added to the outputs, to exercise outputs too large for XCom."""
    scenario: Scenario = Field(default_factory=lambda: Scenario(processing_seconds=0.2))


def _default_stackai_flows() -> list[StackAIFlow]:
    return [
        StackAIFlow(id=STACKAI_FLOW, name="Contract review"),
        StackAIFlow(id=STACKAI_BIG_OUTPUT_FLOW, name="Long report", output_bytes=200_000),
        StackAIFlow(
            id=STACKAI_FAILING_FLOW,
            name="Always fails",
            scenario=Scenario(processing_seconds=0.1, outcome="failed", error="LLM node out-0 timed out"),
        ),
    ]


class StackAIConfig(BaseModel):
    org_id: str = STACKAI_ORG
    flows: list[StackAIFlow] = Field(default_factory=_default_stackai_flows)
    oauth_users: dict[str, str] = Field(default_factory=lambda: {"analyst": "analyst-password"})
    token_ttl_seconds: float = 3600.0


class EmulatorConfig(BaseModel):
    api_keys: list[str] = Field(default_factory=lambda: ["emulator-key"])
    fault_mode: FaultMode = Field(default_factory=FaultMode)
    rate_limit: float | None = None
    """Requests per second per API key; beyond it the emulator answers 429 with Retry-After."""
    tableflow: TableFlowConfig = Field(default_factory=TableFlowConfig)
    extend: ExtendConfig = Field(default_factory=ExtendConfig)
    noxus: NoxusConfig = Field(default_factory=NoxusConfig)
    stackai: StackAIConfig = Field(default_factory=StackAIConfig)


def load_config(path: str | Path | None = None) -> EmulatorConfig:
    if path is None:
        return EmulatorConfig()
    return EmulatorConfig.model_validate(json.loads(Path(path).read_text()))
