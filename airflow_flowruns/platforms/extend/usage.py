"""What Extend says a run cost, and the usage tags that attribute the runs Airflow starts to their DAG and task.

Wire facts, each from the extend-ai 1.20.0 SDK (``extend_ai/``):

* A ``WorkflowRun`` carries ``usage`` (``types/run_usage.py``: ``credits``, ``totalCredits``, ``breakdown``), a
  ``WorkflowRunSummary`` the same without ``breakdown`` (``types/run_usage_summary.py``); both leave it out for
  runs created before October 7, 2025 and for customers on legacy billing. A workflow run's ``credits`` is the
  aggregate of its child runs (its ``totalCredits`` equals it): the run's cost.
* Both carry ``files`` (``FileSummary``), whose ``metadata.pageCount`` is set for PDF and DOCX files only. A run's
  pages are the sum over its files, and unknown where one has none; a file a splitter made (``parentFileId``) is
  part of an input file and not counted again.
* Extend reports no token counts.
* The run metadata's ``extend:usage_tags`` (the docstrings of ``workflow_runs.create`` and ``update``) is a list
  of strings that Extend's billing groups usage by. A tag keeps only letters, digits, hyphens and underscores:
  Extend removes any other character. Runs Airflow starts carry ``airflow-dag-<dag_id>`` and
  ``airflow-task-<task_id>`` after the tags the task's metadata gives, every other character of an id written as
  a hyphen (``etl.daily`` as ``etl-daily``), so no tag changes on the way in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.platforms.start import StartedBy
from airflow_flowruns.platforms.usage import Usage

USAGE_TAGS_FIELD = "extend:usage_tags"
NOT_IN_A_TAG = re.compile(r"[^A-Za-z0-9_-]+")


class RunUsage(BaseModel):
    """A run's ``usage``: the SDK's ``RunUsage`` (full run) or ``RunUsageSummary`` (list item), as far as read."""

    model_config = ConfigDict(extra="ignore")

    credits: float


class FileMetadata(BaseModel):
    model_config = ConfigDict(extra="ignore")

    pageCount: float | None = None


class FileSummary(BaseModel):
    """One of a run's ``files``, as far as its pages are concerned."""

    model_config = ConfigDict(extra="ignore")

    parentFileId: str | None = None
    metadata: FileMetadata = Field(default_factory=FileMetadata)


def run_usage(usage: RunUsage | None, files: list[FileSummary] | None) -> Usage | None:
    """The run's credits and pages, where Extend reports them."""
    return Usage.reported(credits=usage.credits if usage else None, pages=_pages(files or []))


def _pages(files: list[FileSummary]) -> int | None:
    counts = [file.metadata.pageCount for file in files if file.parentFileId is None]
    if not counts or any(count is None or not count.is_integer() for count in counts):
        return None
    return int(sum(count for count in counts if count is not None))


def with_usage_tags(metadata: Mapping[str, Any], started_by: StartedBy | None) -> dict[str, Any]:
    """The run metadata with the tags that name the DAG and the task starting the run, after the task's own."""
    given = metadata.get(USAGE_TAGS_FIELD, [])
    if not isinstance(given, list) or not all(isinstance(tag, str) for tag in given):
        raise FlowRunsConfigError(
            f'metadata["{USAGE_TAGS_FIELD}"] must be a list of strings, the tags Extend groups billing by '
            '(e.g. ["team-finance"]).'
        )
    if started_by is None:
        return dict(metadata)
    ours = [_tag("airflow-dag-", started_by.dag_id), _tag("airflow-task-", started_by.task_id)]
    return {**metadata, USAGE_TAGS_FIELD: list(dict.fromkeys([*given, *ours]))}


def _tag(prefix: str, name: str) -> str:
    return prefix + NOT_IN_A_TAG.sub("-", name)
