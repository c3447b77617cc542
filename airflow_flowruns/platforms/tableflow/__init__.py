"""TableFlow v2: one multipart call starts a run; runs are polled by id; there is no cancel."""

from airflow_flowruns.connection_forms import run_url_template_field
from airflow_flowruns.platforms.facts import PlatformFacts

FACTS = PlatformFacts(
    name="tableflow",
    label="TableFlow",
    default_base_url="https://api.tableflow.com/v2",
    base_path="/v2",
    integration_url="https://tableflow.com",
    package=__name__,
    extras=(run_url_template_field("{base_url}/flows/runs/{run_id}"),),
)
