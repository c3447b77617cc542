"""One module per platform; this package maps a connection type to its platform class."""

from __future__ import annotations

from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.platforms.base import (
    Api,
    ApiCall,
    ConnectionSettings,
    FlowRun,
    Platform,
    RunQuery,
    RunsPage,
    RunState,
)
from airflow_flowruns.platforms.extend import Extend
from airflow_flowruns.platforms.noxus import Noxus
from airflow_flowruns.platforms.stackai import StackAI
from airflow_flowruns.platforms.start import StartRequest, UploadFile
from airflow_flowruns.platforms.tableflow import TableFlow

PLATFORMS: dict[str, type[Platform]] = {cls.name: cls for cls in (TableFlow, Extend, Noxus, StackAI)}


def platform_class(conn_type: str | None, conn_id: str) -> type[Platform]:
    try:
        return PLATFORMS[conn_type or ""]
    except KeyError:
        raise FlowRunsConfigError(
            f"Connection {conn_id!r} has type {conn_type!r}, which is not a flow-runs platform. "
            f"Use one of: {', '.join(sorted(PLATFORMS))}."
        ) from None


__all__ = [
    "PLATFORMS",
    "Api",
    "ApiCall",
    "ConnectionSettings",
    "FlowRun",
    "Platform",
    "RunQuery",
    "RunState",
    "RunsPage",
    "StartRequest",
    "UploadFile",
    "platform_class",
]
