"""Extend: upload a file, then start a workflow run with it; runs are read by id and listed by last change."""

from airflow_flowruns.connection_forms import ExtraField
from airflow_flowruns.platforms.facts import PlatformFacts

FACTS = PlatformFacts(
    name="extend",
    label="Extend",
    default_base_url="https://api.extend.ai",
    integration_url="https://www.extend.ai",
    package=__name__,
    reports_confidence=True,
    extras=(
        ExtraField(
            "api_version",
            "API version",
            "string",
            "Sent as x-extend-api-version on every call. Default 2026-02-09.",
            "2026-02-09",
        ),
        ExtraField(
            "workspace_id",
            "Workspace id",
            "string",
            "Sent as x-extend-workspace-id; needed with organization-scoped API keys.",
        ),
    ),
)
