"""The normalized outputs of one run, the same for every platform, and how their files are fetched.

Each platform's reader (one module per platform in this package) turns the run object as the platform
sent it into ``RunOutputs``, without any I/O. ``outputs.json`` is ``outputs_document`` of it:

.. code-block:: json

    {
      "format": "airflow-flowruns/outputs/1",
      "platform": "extend", "flow_id": "workflow_...", "run_id": "workflow_run_...",
      "status": "PROCESSED", "state": "succeeded", "reviewed": true, "updated_at": "2026-...Z",
      "usage": {"credits": 4.0, "pages": 2, "tokens": null},
      "outputs": [
        {"name": "total", "step": "Extract invoice", "kind": "field", "value": 1243.5, "confidence": 0.62,
         "initial_value": 1234.5, "reviewed_value": 1243.5}
      ],
      "files": [
        {"id": "file_...", "name": "part-1.pdf", "step": "Split", "mime_type": null,
         "path": "files/file_.../part-1.pdf", "downloaded": true, "note": null}
      ]
    }

``usage`` is what the run consumed, each measure null where the platform reports it not, and null as a whole
where it reports none (``Usage``). ``kind`` is one of ``KINDS``.
``confidence`` is a number from 0 to 1 where the platform gives one, else null. ``initial_value`` and
``reviewed_value`` appear only on outputs a human review changed; ``value`` is then the reviewed value. Sizes
and checksums of the landed files are in ``_MANIFEST.json``.
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from airflow_flowruns.exceptions import FlowRunsConfigError
from airflow_flowruns.platforms.base import ApiCall, FlowRun
from airflow_flowruns.platforms.values import path_segment

if TYPE_CHECKING:
    from airflow_flowruns.review.ask import Decision

FORMAT = "airflow-flowruns/outputs/1"

KINDS = {
    "field": "one extracted field (Extend extraction steps)",
    "classification": "the class a document was given (Extend classification steps)",
    "split": "one document found by a split step; its file is in files (Extend)",
    "text": "a text output (Noxus, StackAI)",
    "data": "any other JSON output (Noxus, StackAI)",
    "file": "an output file, landed under files/ (Noxus)",
    "file_reference": "an output file the platform names but serves through no documented call (TableFlow)",
}


@dataclass(frozen=True)
class Review:
    """An output a human review changed: what the platform extracted, and what the reviewer made of it."""

    initial: Any
    reviewed: Any


@dataclass(frozen=True)
class Output:
    name: str
    kind: str
    value: Any
    step: str | None = None
    confidence: float | None = None
    review: Review | None = None


@dataclass(frozen=True)
class ApiDownload:
    """The platform's API serves the file's bytes, with the connection's credentials."""

    call: ApiCall


@dataclass(frozen=True)
class PresignedDownload:
    """The platform's API answers ``lookup`` with a short-lived URL under ``url_field``, fetched without any
    credentials. The URL is asked for just before each download attempt, so it has not expired."""

    lookup: ApiCall
    url_field: str


Download = ApiDownload | PresignedDownload

NO_FILE_ID = "The platform named this file by an id that names no file: only the reference is landed."


def file_call(name: str, collection: str, file_id: str) -> ApiCall | None:
    """``GET {collection}/{file_id}``, the id as exactly one percent-encoded path segment, as run ids are: an id
    from an answer (``../runs``, ``x?key=``) can never aim the call, which carries the key, at another path.
    None for an id that names no file (empty, ``.``, ``..``): such a file is landed as a reference only."""
    try:
        return ApiCall(name, "GET", f"{collection}/{path_segment(file_id, 'file id')}")
    except FlowRunsConfigError:
        return None


@dataclass(frozen=True)
class OutputFile:
    id: str
    name: str
    step: str | None = None
    mime_type: str | None = None
    download: Download | None = None
    note: str | None = None
    """Why the file is not downloaded, when ``download`` is None."""

    @property
    def path(self) -> str:
        """Where the file lands, relative to the run's folder: one folder per file id (``folder_name``), so
        two files never share a path; two outputs naming the same file (same id and name) share it."""
        return f"files/{folder_name(self.id)}/{safe_segment(self.name)}"


@dataclass(frozen=True)
class RunOutputs:
    outputs: list[Output] = field(default_factory=list)
    files: list[OutputFile] = field(default_factory=list)
    updated_at: str | None = None
    """The run's last update as the platform states it (ISO 8601), for the manifest."""
    reviewed: bool = False


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_segment(text: str) -> str:
    """A file's name from the platform as one path segment: no separators, no ``..``, never empty. Two names
    may clean to one; a file's path stays its own through its id's folder (``OutputFile.path``)."""
    cleaned = _UNSAFE.sub("_", text).strip("._") or "_"
    return cleaned[:200]


_KEPT = frozenset(string.ascii_letters + string.digits + "-_")
LONGEST_NAME = 200


def folder_name(text: str) -> str:
    """The folder of one id (a platform, flow, run or file id), never the same for two ids.

    Letters, digits, ``-`` and ``_`` stay (an id of only those is its own folder name); every other character,
    ``%`` and ``.`` included, is percent-encoded as UTF-8. So ``a/b`` and ``a_b``, ``r1`` and ``r1.partial``
    get folders of their own, and no name has a ``.``: none is ``..``, hidden, or a staging folder. The empty
    id is ``~``; a name over ``LONGEST_NAME`` characters is cut and ends in ``~`` and the id's sha256, and no
    other name has a ``~``.
    """
    encoded = "".join(char if char in _KEPT else _percent(char) for char in text)
    if not encoded:
        return "~"
    if len(encoded) <= LONGEST_NAME:
        return encoded
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{encoded[: LONGEST_NAME - len(digest) - 1]}~{digest}"


def _percent(char: str) -> str:
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))


def outputs_document(run: FlowRun, outputs: RunOutputs, review: Decision | None = None) -> dict[str, Any]:
    """``outputs.json``: the run's outputs in the provider's one shape (see the module docstring), with the
    fields a reviewer edited in Airflow and the decision under ``review``."""
    if review is not None:
        outputs = reviewed_in_airflow(outputs, review.reviewed_values)
    document: dict[str, Any] = {
        "format": FORMAT,
        "platform": run.platform,
        "flow_id": run.flow_id,
        "run_id": run.id,
        "status": run.status,
        "state": run.state.value,
        "reviewed": outputs.reviewed,
        "updated_at": outputs.updated_at,
        "usage": run.usage.to_json() if run.usage else None,
        "outputs": [_output_entry(output) for output in outputs.outputs],
        "files": [
            {
                "id": file.id,
                "name": file.name,
                "step": file.step,
                "mime_type": file.mime_type,
                "path": file.path,
                "downloaded": file.download is not None,
                "note": file.note,
            }
            for file in outputs.files
        ],
    }
    if review is not None:
        document["review"] = review.to_xcom()
    return document


def reviewed_in_airflow(outputs: RunOutputs, values: dict[str, Any]) -> RunOutputs:
    """The outputs with the values a reviewer gave in Airflow, each keeping what was extracted beside it."""
    changed = [
        replace(o, value=values[o.name], review=Review(o.value, values[o.name])) if o.name in values else o
        for o in outputs.outputs
    ]
    return replace(outputs, outputs=changed, reviewed=outputs.reviewed or bool(values))


def _output_entry(output: Output) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": output.name,
        "step": output.step,
        "kind": output.kind,
        "value": output.value,
        "confidence": output.confidence,
    }
    if output.review is not None:
        entry["initial_value"] = output.review.initial
        entry["reviewed_value"] = output.review.reviewed
    return entry
