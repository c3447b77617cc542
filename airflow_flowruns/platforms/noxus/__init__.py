"""Noxus: upload files, then run a workflow with its inputs; runs are read by id."""

from airflow_flowruns.connection_forms import run_url_template_field
from airflow_flowruns.platforms.facts import PlatformFacts

FACTS = PlatformFacts(
    name="noxus",
    label="Noxus",
    default_base_url="https://backend.noxus.ai",
    integration_url="https://noxus.ai",
    package=__name__,
    extras=(run_url_template_field("{base_url}/v1/workflows/{flow_id}/runs/{run_id}"),),
)
