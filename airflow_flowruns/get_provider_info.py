"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_flowruns import __version__
from airflow_flowruns.platforms import registered

MODULES: dict[str, list[str]] = {
    "operators": [
        "airflow_flowruns.operators.flow_run",
        "airflow_flowruns.operators.export",
        "airflow_flowruns.operators.outputs",
    ],
    "sensors": ["airflow_flowruns.sensors.flow_run"],
    "hooks": ["airflow_flowruns.hooks.flow_run"],
    "triggers": ["airflow_flowruns.triggers.flow_run", "airflow_flowruns.triggers.watcher"],
}
"""Every platform is served by the same modules, so each integration lists all of them."""

DEFAULT_MIN_POLL_INTERVAL = 1.0
CONFIG: dict[str, Any] = {
    "flowruns": {
        "description": "Settings of the airflow-flowruns provider.\n",
        "options": {
            "min_poll_interval": {
                "description": "The shortest ``poll_interval``, in seconds, that FlowRunOperator, FlowRunSensor and "
                "FlowRunEventTrigger accept; a shorter one is refused when the DAG is parsed. Runs take "
                "seconds to minutes: polling faster only spends the platform's rate limit on the same answer.\n",
                "version_added": None,
                "type": "float",
                "example": "5",
                "default": str(DEFAULT_MIN_POLL_INTERVAL),
            },
        },
    },
}
"""The provider's ``[flowruns]`` configuration options, as official providers declare theirs, so
``airflow config list`` shows them with their defaults and descriptions."""

CLI = ["airflow_flowruns.cli.definition.get_flowruns_cli_commands"]
"""``airflow flowruns``, which Airflow 3.2+ adds to its CLI; earlier lines ignore the entry, and the ``flowruns``
console script serves the same commands there."""


def get_provider_info() -> dict[str, Any]:
    """Built from the platform registry: one integration and one connection type per registered platform."""
    platforms = registered()
    return {
        "package-name": "airflow-flowruns",
        "name": "Flow runs",
        "description": "Start document-AI flow runs (TableFlow, Extend, Noxus, StackAI) and wait for them.",
        "versions": [__version__],
        "integrations": [
            {"integration-name": facts.label, "external-doc-url": facts.integration_url, "tags": ["service"]}
            for facts in platforms
        ],
        **{
            section: [{"integration-name": facts.label, "python-modules": modules} for facts in platforms]
            for section, modules in MODULES.items()
        },
        "connection-types": [
            {
                "hook-name": facts.label,
                "connection-type": facts.name,
                "hook-class-name": facts.hook_class_name,
                **facts.form.provider_info(),
            }
            for facts in platforms
        ],
        "extra-links": ["airflow_flowruns.links.FlowRunLink"],
        "config": CONFIG,
        "cli": CLI,
    }
