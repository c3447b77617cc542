"""Land a run's outputs: one reader per platform (I/O-free), and the landing that writes them.

See :mod:`airflow_flowruns.outputs.model` for the normalized shape of ``outputs.json``.
"""

from __future__ import annotations

from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.outputs.base import OutputReader
from airflow_flowruns.outputs.extend import ExtendOutputs
from airflow_flowruns.outputs.noxus import NoxusOutputs
from airflow_flowruns.outputs.stackai import StackAIOutputs
from airflow_flowruns.outputs.tableflow import TableFlowOutputs

READERS: dict[str, type[OutputReader]] = {
    cls.platform: cls for cls in (TableFlowOutputs, ExtendOutputs, NoxusOutputs, StackAIOutputs)
}


def reader_for(platform: str) -> OutputReader:
    try:
        return READERS[platform]()
    except KeyError:
        raise FlowRunsConfigError(f"Landing outputs is not supported for platform {platform!r}.") from None


__all__ = ["READERS", "OutputReader", "reader_for"]
