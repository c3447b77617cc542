"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_flowruns import __version__
from airflow_flowruns.connection_forms import FORMS, with_connection_forms

INTEGRATIONS: dict[str, str] = {
    "tableflow": "https://tableflow.com",
    "extend": "https://www.extend.ai",
    "noxus": "https://noxus.ai",
    "stackai": "https://www.stack-ai.com",
}
"""One integration per platform (its connection type), with the vendor's site."""

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


def get_provider_info() -> dict[str, Any]:
    labels = {conn_type: FORMS[conn_type].label for conn_type in INTEGRATIONS}
    return {
        "package-name": "airflow-flowruns",
        "name": "Flow runs",
        "description": "Start document-AI flow runs (TableFlow, Extend, Noxus, StackAI) and wait for them.",
        "versions": [__version__],
        "integrations": [
            {"integration-name": labels[conn_type], "external-doc-url": url, "tags": ["service"]}
            for conn_type, url in INTEGRATIONS.items()
        ],
        **{
            section: [{"integration-name": label, "python-modules": modules} for label in labels.values()]
            for section, modules in MODULES.items()
        },
        "connection-types": with_connection_forms(
            [
                {"connection-type": conn_type, "hook-class-name": f"airflow_flowruns.hooks.flow_run.{label}Hook"}
                for conn_type, label in labels.items()
            ]
        ),
        "extra-links": ["airflow_flowruns.links.FlowRunLink"],
        "config": CONFIG,
    }
