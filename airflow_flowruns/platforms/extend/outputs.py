"""Extend's outputs: the results of the full run's ``stepRuns[]`` (extend-ai 1.20.0 models).

* Extraction steps (``EXTRACT``, ``MERGE_EXTRACT``, ``CONDITIONAL_EXTRACT``) hold an ``extractRun`` whose
  ``output`` is ``{value, metadata}`` (one output per top-level field of ``value``; its confidence is the
  field's ``metadata`` ``logprobsConfidence``, else ``ocrConfidence``), or the legacy
  ``{field: {value, confidence, ...}}``. After a review ``output`` is the reviewed output, and
  ``initialOutput``/``reviewedOutput`` say what changed.
* Classification steps hold a ``classifyRun`` whose ``output`` is ``{id, type, confidence, insights}``.
* Split steps hold a ``splitRun`` whose ``output.splits[]`` each name a ``fileId``: those files are landed
  through ``GET /files/{id}`` (the id percent-encoded as one path segment), whose ``presignedUrl`` (valid
  about 15 minutes) is fetched without the key.
* Other steps (parse, validation, routing) stay in ``run.json`` only.
* The run's last update is the latest of its step runs' ``updatedAt``, ``reviewedAt`` and ``endTime``
  (the full run has no ``updatedAt`` of its own).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from airflow_flowruns.outputs.base import OutputReader, latest, parse_part
from airflow_flowruns.outputs.model import (
    NO_FILE_ID,
    Output,
    OutputFile,
    PresignedDownload,
    Review,
    RunOutputs,
    file_call,
)


class ProcessorRun(BaseModel):
    """What extract, classify and split runs share: the output, and the review that may have changed it."""

    model_config = ConfigDict(extra="allow")

    output: Any = None
    initialOutput: Any = None
    reviewedOutput: Any = None
    reviewed: bool = False
    updatedAt: datetime | None = None


class Step(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str | None = None


class StepRun(BaseModel):
    model_config = ConfigDict(extra="allow")

    stepType: str
    step: Step = Field(default_factory=Step)
    result: dict[str, Any] | None = None
    files: list[dict[str, Any]] = Field(default_factory=list)


class Run(BaseModel):
    model_config = ConfigDict(extra="allow")

    stepRuns: list[StepRun] = Field(default_factory=list)
    files: list[dict[str, Any]] = Field(default_factory=list)
    reviewed: bool = False
    reviewedAt: datetime | None = None
    endTime: datetime | None = None


class ExtendOutputs(OutputReader):
    def read(self, raw: Mapping[str, Any]) -> RunOutputs:
        run = parse_part(Run, raw, "Extend workflow run")
        outputs: list[Output] = []
        files: list[OutputFile] = []
        updates = [run.reviewedAt, run.endTime]
        names = {f.get("id"): f.get("name") for f in run.files}
        for step_run in run.stepRuns:
            names.update({f.get("id"): f.get("name") for f in step_run.files})
            step = step_run.step.name or step_run.stepType
            field_name, reader = STEP_READERS.get(step_run.stepType, (None, None))
            result = (step_run.result or {}).get(field_name) if field_name else None
            if reader is None or not result:
                continue
            processor = parse_part(ProcessorRun, result, f"Extend {field_name}")
            updates.append(processor.updatedAt)
            for output in reader(step, processor):
                outputs.append(output)
                if output.kind == "split":
                    files.append(_split_file(step, output.value["file_id"], names))
        return RunOutputs(outputs, _unique(files), latest(updates), run.reviewed)


def _fields(step: str, run: ProcessorRun) -> Iterator[Output]:
    final = _field_values(run.output)
    initial = _field_values(run.initialOutput) if run.reviewed else {}
    reviewed = _field_values(run.reviewedOutput) if run.reviewed else {}
    for name, (value, confidence) in final.items():
        if confidence is None and name in initial:
            confidence = initial[name][1]
        review = None
        if name in initial and name in reviewed and initial[name][0] != reviewed[name][0]:
            review = Review(initial[name][0], reviewed[name][0])
        yield Output(name, "field", value, step, confidence, review)


def _field_values(output: Any) -> dict[str, tuple[Any, float | None]]:
    """Field name to (value, confidence), from the JSON Schema shape or the legacy fields shape."""
    if not isinstance(output, Mapping):
        return {}
    if isinstance(output.get("value"), Mapping) and "metadata" in output:
        metadata = output.get("metadata") or {}
        return {
            name: (value, _confidence(metadata.get(name), "logprobsConfidence", "ocrConfidence"))
            for name, value in output["value"].items()
        }
    return {
        name: (field.get("value"), _confidence(field, "confidence"))
        for name, field in output.items()
        if isinstance(field, Mapping)
    }


def _confidence(source: Any, *keys: str) -> float | None:
    if isinstance(source, Mapping):
        for key in keys:
            value = source.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
    return None


def _classification(step: str, run: ProcessorRun) -> Iterator[Output]:
    if not isinstance(run.output, Mapping):
        return
    review = None
    if run.reviewed and isinstance(run.initialOutput, Mapping) and isinstance(run.reviewedOutput, Mapping):
        before, after = run.initialOutput.get("type"), run.reviewedOutput.get("type")
        review = Review(before, after) if before != after else None
    yield Output(step, "classification", run.output.get("type"), step, _confidence(run.output, "confidence"), review)


def _splits(step: str, run: ProcessorRun) -> Iterator[Output]:
    splits = run.output.get("splits") if isinstance(run.output, Mapping) else None
    for split in splits or []:
        if not isinstance(split, Mapping) or not split.get("fileId"):
            continue
        value = {
            "type": split.get("type"),
            "identifier": split.get("identifier"),
            "start_page": split.get("startPage"),
            "end_page": split.get("endPage"),
            "file_id": split["fileId"],
        }
        yield Output(str(split.get("name") or split.get("identifier") or split["fileId"]), "split", value, step)


def _split_file(step: str, file_id: str, names: Mapping[Any, Any]) -> OutputFile:
    lookup = file_call("get file", "/files", file_id)
    download = PresignedDownload(lookup, "presignedUrl") if lookup else None
    note = None if lookup else NO_FILE_ID
    return OutputFile(file_id, str(names.get(file_id) or file_id), step, download=download, note=note)


STEP_READERS: dict[str, tuple[str, Callable[[str, ProcessorRun], Iterator[Output]]]] = {
    "EXTRACT": ("extractRun", _fields),
    "MERGE_EXTRACT": ("extractRun", _fields),
    "CONDITIONAL_EXTRACT": ("extractRun", _fields),
    "CLASSIFY": ("classifyRun", _classification),
    "SPLIT": ("splitRun", _splits),
}
"""Step type to the field of ``result`` holding its processor run, and how its outputs are read."""


def _unique(files: list[OutputFile]) -> list[OutputFile]:
    seen: dict[str, OutputFile] = {}
    for file in files:
        seen.setdefault(file.id, file)
    return list(seen.values())


READER = ExtendOutputs
