"""StackAI's outputs: ``outputs`` keyed by output node id (``out-0``, ...).

The run object is the analytics listing item, where ``outputs`` is a JSON-encoded string, or the run
answer (``{run_id, outputs}``) where the listing does not show the run yet. Each node's value is one
output: ``text`` for a string, ``data`` otherwise. StackAI serves no output files and gives no
confidence. The run's last update is its ``date`` (the only time an item carries).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from airflow_flowruns.outputs.base import OutputReader, latest, output_kind, parse_part
from airflow_flowruns.outputs.model import Output, RunOutputs


class Run(BaseModel):
    model_config = ConfigDict(extra="allow")

    outputs: Any = None
    date: datetime | None = None


class StackAIOutputs(OutputReader):
    def read(self, raw: Mapping[str, Any]) -> RunOutputs:
        run = parse_part(Run, raw, "StackAI run")
        outputs = run.outputs
        if isinstance(outputs, str):
            try:
                outputs = json.loads(outputs)
            except ValueError:
                outputs = {"outputs": outputs}
        found = [Output(str(node), output_kind(value), value) for node, value in (outputs or {}).items()]
        return RunOutputs(found, [], latest([run.date]))


READER = StackAIOutputs
