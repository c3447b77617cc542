"""The three platforms of the distributed run: a flow per outcome, and how each takes its document."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_flowruns.platforms.noxus.emulator import (
    NOXUS_DOCUMENT_WORKFLOW,
    NOXUS_FAILING_WORKFLOW,
    NOXUS_REVIEW_WORKFLOW,
)
from e2e.run import PROFILES as E2E_PROFILES


@dataclass(frozen=True)
class Profile:
    flows: Mapping[str, str]
    """Flow id per outcome: completed, failed, review."""
    files: Callable[[Path], dict[str, Any]]
    inputs: Mapping[str, Any] = field(default_factory=dict)

    def entry(self, conn_id: str, outcome: str, path: Path) -> dict[str, Any]:
        """The FlowRunOperator arguments of one document."""
        entry = {"flowruns_conn_id": conn_id, "flow_id": self.flows[outcome], "files": self.files(path)}
        return {**entry, "inputs": dict(self.inputs)} if self.inputs else entry


PROFILES: dict[str, Profile] = {
    **{name: Profile(profile.flows, profile.files) for name, profile in E2E_PROFILES.items()},
    "noxus": Profile(
        flows={
            "completed": NOXUS_DOCUMENT_WORKFLOW,
            "failed": NOXUS_FAILING_WORKFLOW,
            "review": NOXUS_REVIEW_WORKFLOW,
        },
        files=lambda path: {"document": str(path)},
        inputs={"instructions": "Summarize the document"},
    ),
}
"""Noxus keeps no run metadata: its runs are matched to their tasks by the uploaded file's name."""


def file_name(index: int) -> str:
    """Unique per document, so a run that keeps only its upload's name still names its document."""
    return f"doc-{index:04d}.pdf"
