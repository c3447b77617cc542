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
            "flow_id",
            "Flow id for the Test button",
            "string",
            "A deployed flow whose runs the Test button lists: StackAI has no call that lists flows, so the test "
            "needs one. Tasks name their own flow; only the test reads this.",
        ),
        ExtraField(
            "run_timeout",
            "Run timeout (seconds)",
            "number",
            "How long one run may take: StackAI answers the run call only once the flow has run, and the task "
            "waits for that answer in the worker. Default 600.",
            600,
        ),
        ExtraField(
            "page_size",
            "Runs per listing page",
            "integer",
            "How many runs each page of a flow's run listing asks for (sensors, the asset watcher, list_runs). "
            "The listing ends at the first shorter page, so if StackAI caps its pages lower, set it to that cap. "
            "Default 100.",
            100,
        ),
        ExtraField(
            "token_url",
            "OAuth token URL (optional)",
            "string",
            "With a login set, the username and password are exchanged here for a bearer token "
            "instead of using the password as API key. Relative to the API base URL or absolute.",
        ),
    ),
)
