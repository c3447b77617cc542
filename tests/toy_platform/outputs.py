"""Toy's outputs: the run's ``result`` object, one output per key; no files, no confidence."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from airflow_flowruns.outputs.base import OutputReader, latest, output_kind, parse_part
from airflow_flowruns.outputs.model import Output, RunOutputs


class Run(BaseModel):
    model_config = ConfigDict(extra="allow")

    result: dict[str, Any] | None = None
    updated_at: datetime | None = None


class ToyOutputs(OutputReader):
    def read(self, raw: Mapping[str, Any]) -> RunOutputs:
        run = parse_part(Run, raw, "Toy run")
        outputs = [Output(name, output_kind(value), value) for name, value in (run.result or {}).items()]
        return RunOutputs(outputs, [], latest([run.updated_at]))


READER = ToyOutputs
