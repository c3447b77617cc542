"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_flowruns import __version__
from airflow_flowruns.connection_forms import with_connection_forms


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-flowruns",
        "name": "Flow runs",
        "description": "Start document-AI flow runs (TableFlow, Extend, Noxus, StackAI) and wait for them.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "TableFlow",
                "external-doc-url": "https://tableflow.com",
                "tags": ["service"],
            },
        ],
        "operators": [
            {
                "integration-name": "TableFlow",
                "python-modules": [
                    "airflow_flowruns.operators.flow_run",
                    "airflow_flowruns.operators.export",
                    "airflow_flowruns.operators.outputs",
                ],
            }
        ],
        "sensors": [{"integration-name": "TableFlow", "python-modules": ["airflow_flowruns.sensors.flow_run"]}],
        "hooks": [{"integration-name": "TableFlow", "python-modules": ["airflow_flowruns.hooks.flow_run"]}],
        "triggers": [{"integration-name": "TableFlow", "python-modules": ["airflow_flowruns.triggers.flow_run"]}],
        "connection-types": with_connection_forms(
            [
                {"connection-type": "tableflow", "hook-class-name": "airflow_flowruns.hooks.flow_run.TableFlowHook"},
                {"connection-type": "extend", "hook-class-name": "airflow_flowruns.hooks.flow_run.ExtendHook"},
                {"connection-type": "noxus", "hook-class-name": "airflow_flowruns.hooks.flow_run.NoxusHook"},
                {"connection-type": "stackai", "hook-class-name": "airflow_flowruns.hooks.flow_run.StackAIHook"},
            ]
        ),
        "extra-links": ["airflow_flowruns.links.FlowRunLink"],
    }
