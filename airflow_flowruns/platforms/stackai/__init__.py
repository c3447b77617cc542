"""StackAI: a flow runs synchronously in its start call; runs are found only by listing them."""

from airflow_flowruns.connection_forms import API_KEY_HOST, ExtraField
from airflow_flowruns.platforms.facts import PlatformFacts

FACTS = PlatformFacts(
    name="stackai",
    label="StackAI",
    default_base_url="https://api.stack-ai.com",
    integration_url="https://www.stack-ai.com",
    package=__name__,
    relabeling={**API_KEY_HOST, "login": "OAuth username (optional)", "password": "API key, or OAuth password"},
    extras=(
        ExtraField("org_id", "Organization id", "string", "The StackAI organization id (required)."),
        ExtraField(
            "token_url",
            "OAuth token URL (optional)",
            "string",
            "With a login set, the username and password are exchanged here for a bearer token "
            "instead of using the password as API key. Relative to the API base URL or absolute.",
        ),
    ),
)
