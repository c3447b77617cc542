"""Noxus's outputs: the run's ``output`` object (``dict | None`` in noxus-sdk 0.6.0's ``Run``).

Each key is one output. A value that is a file (a mapping with a string ``uri`` and a ``name``, as
noxus-sdk's ``File`` model has them), or a list of files, is kind ``file``: each is landed through
``GET /v1/file/{id}`` with the connection's key (the id percent-encoded as one path segment), its id being
``id``, else the last segment of a ``spot://`` uri (the SDK's own rule). Other values are ``text`` or
``data``. Noxus gives no confidence and has no review outputs. The run's last update is ``finished_at``,
else ``created_at`` (runs have no ``updated_at``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from airflow_flowruns.outputs.base import OutputReader, latest, output_kind, parse_part
from airflow_flowruns.outputs.model import NO_FILE_ID, ApiDownload, Output, OutputFile, RunOutputs, file_call


class Run(BaseModel):
    model_config = ConfigDict(extra="allow")

    output: dict[str, Any] | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None


class NoxusOutputs(OutputReader):
    def read(self, raw: Mapping[str, Any]) -> RunOutputs:
        run = parse_part(Run, raw, "Noxus run")
        outputs, files = [], []
        for name, value in (run.output or {}).items():
            found = [_file(name, item) for item in (value if isinstance(value, list) else [value])]
            if found and all(found):
                landed = [file for file in found if file is not None]
                files.extend(landed)
                refs = [{"file_id": f.id, "name": f.name, "path": f.path} for f in landed]
                outputs.append(Output(name, "file", refs if isinstance(value, list) else refs[0]))
            else:
                outputs.append(Output(name, output_kind(value), value))
        return RunOutputs(outputs, files, latest([run.finished_at or run.created_at]))


def _file(output: str, value: Any) -> OutputFile | None:
    if not isinstance(value, Mapping) or not isinstance(value.get("uri"), str) or not value.get("name"):
        return None
    uri = value["uri"]
    file_id = value.get("id") or (uri.rstrip("/").rsplit("/", 1)[-1] if uri.startswith("spot://") else None)
    if not file_id:
        return None
    call = file_call("download file", "/v1/file", str(file_id))
    download, note = (ApiDownload(call), None) if call else (None, NO_FILE_ID)
    return OutputFile(str(file_id), str(value["name"]), output, value.get("content_type"), download, note)


READER = NoxusOutputs
