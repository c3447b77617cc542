"""TableFlow's outputs: the files a run names in ``drive_files`` (``{name: {file_id, mime_type, sheets}}``).

No documented call downloads them, so they land as references (kind ``file_reference``) and nothing is
fetched. ``TableFlowOutputs.drive_file_download`` is the one place to change when TableFlow documents
such a call. The run's last update is its ``updated_at``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from airflow_flowruns.outputs.base import OutputReader, latest, parse_part
from airflow_flowruns.outputs.model import Download, Output, OutputFile, RunOutputs

NO_DOWNLOAD = "TableFlow documents no call that downloads drive_files: only the reference is landed."


class DriveFile(BaseModel):
    model_config = ConfigDict(extra="allow")

    file_id: str
    mime_type: str | None = None
    sheets: list[Any] = Field(default_factory=list)


class Run(BaseModel):
    model_config = ConfigDict(extra="allow")

    drive_files: dict[str, DriveFile] | None = None
    updated_at: datetime | int | None = None


class TableFlowOutputs(OutputReader):
    def read(self, raw: Mapping[str, Any]) -> RunOutputs:
        run = parse_part(Run, raw, "TableFlow run")
        outputs, files = [], []
        for name, drive_file in (run.drive_files or {}).items():
            value = {"file_id": drive_file.file_id, "mime_type": drive_file.mime_type, "sheets": drive_file.sheets}
            outputs.append(Output(name, "file_reference", value))
            download = self.drive_file_download(drive_file.file_id)
            files.append(
                OutputFile(
                    drive_file.file_id,
                    name,
                    mime_type=drive_file.mime_type,
                    download=download,
                    note=NO_DOWNLOAD if download is None else None,
                )
            )
        updated = run.updated_at
        if isinstance(updated, int):
            updated = datetime.fromtimestamp(updated).astimezone()
        return RunOutputs(outputs, files, latest([updated]))

    def drive_file_download(self, file_id: str) -> Download | None:
        """How to fetch one drive file: None, as no documented call serves them (see the module docstring)."""
        return None


READER = TableFlowOutputs
