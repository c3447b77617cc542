"""What a platform says about starting many runs at once, for ``airflow_flowruns.batch``.

Every default here fits a platform that starts one run per call and keeps the run key in the run's metadata
(TableFlow); a platform folder overrides what differs (Extend's batch endpoint, listing items without
metadata, a flow's one file field).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_flowruns.platforms.start import key_in_name

if TYPE_CHECKING:
    from airflow_flowruns.platforms.base import Api, FlowRun
    from airflow_flowruns.platforms.start import FilePath, StartedBy


@dataclass(frozen=True)
class BatchDocument:
    """One document of a batch start: its run key, its key, and its file by path (uploaded under its keyed
    name) or by URL (``name`` is then the keyed name the platform shows)."""

    run_key: str
    document_key: str
    path: FilePath | None = None
    url: str | None = None
    name: str | None = None


class BatchStarts:
    """The batch facts and calls of a platform (mixed into ``Platform``)."""

    keyed_file_names: ClassVar[bool] = False
    """A batch document's file goes up named ``{run key}~{name}``, because listing items carry no metadata
    but do carry file names (``start.keyed_name``); the run key is then found without reading the run."""
    largest_page: ClassVar[int | None] = None
    """The most runs one listing page returns, asked for by a batch's census (None: the platform's default)."""
    batch_inputs: ClassVar[int] = 0
    """Documents one batch start call takes (Extend's 1,000); 0: one run per start call."""
    takes_metadata: ClassVar[bool] = True
    """Runs keep a metadata object, where a batch names each run's document (``DOCUMENT_KEY_FIELD``)."""
    takes_file_urls: ClassVar[bool] = False
    """A run's file can be given by URL, so documents on object storage can go by presigned URL."""

    def file_names_of(self, run: FlowRun) -> list[str]:
        """The names of the files a run was started with, as its listing item shows them."""
        return []

    def key_in_file_names(self, run: FlowRun) -> str | None:
        """The run key a keyed file name carries, where the platform names files by key."""
        if not self.keyed_file_names:
            return None
        return next(filter(None, map(key_in_name, self.file_names_of(run))), None)

    def default_file_field(self, api: Api, flow_id: str) -> str | None:
        """The field a batch's one-file documents go under when the task names none; None: it must name one."""
        return None

    def start_batch(
        self,
        api: Api,
        flow_id: str,
        documents: Sequence[BatchDocument],
        flow_version: str | None,
        metadata: Any,
        started_by: StartedBy | None = None,
    ) -> str:
        """Start one run per document (at most ``batch_inputs``) with one call, for the task ``started_by``
        names; the batch's id."""
        raise NotImplementedError(f"{type(self).__name__} starts one run per call")
