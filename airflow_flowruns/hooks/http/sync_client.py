"""The blocking client, for workers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
from tenacity import Retrying

from airflow_flowruns.hooks.http.errors import found, translated_errors
from airflow_flowruns.hooks.http.options import KEEPALIVE_SECONDS, HttpOptions
from airflow_flowruns.hooks.http.retry import decode_and_pace, retry_policy
from airflow_flowruns.hooks.ratelimit import scheduler_for
from airflow_flowruns.platforms.base import ApiCall, FlowRun, Platform, RunQuery


class FlowRunsClient:
    """Blocking client for workers: uploads stream from disk, so memory does not grow with file size."""

    def __init__(self, platform: Platform, options: HttpOptions) -> None:
        self.platform = platform
        self.options = options
        self._scheduler = scheduler_for(platform.settings.conn_id, options.max_requests_per_second)
        self._http = httpx.Client(
            base_url=platform.settings.base_url,
            headers=platform.headers(),
            auth=platform.auth(),
            timeout=options.timeout,
            verify=options.ssl_context(),
            limits=httpx.Limits(keepalive_expiry=KEEPALIVE_SECONDS),
        )

    def call(self, call: ApiCall) -> Any:
        with translated_errors(self.platform, call):
            for attempt in Retrying(**retry_policy(self.platform, self.options, call)):
                with attempt:
                    return self._send(call)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def get_run(self, flow_id: str | None, run_id: str) -> FlowRun:
        call = self.platform.get_run_call(flow_id, run_id)
        if call is None:
            return found(self.platform, run_id, next(self.iter_runs(self.platform.run_lookup(flow_id, run_id)), None))
        return self.platform.parse_run(self.call(call), flow_id)

    def iter_runs(self, query: RunQuery) -> Iterator[FlowRun]:
        """Walk the listing lazily: one request per page, one page in memory at a time."""
        call: ApiCall | None = self.platform.list_runs_call(query)
        while call is not None:
            page = self.platform.parse_runs_page(self.call(call), call, query)
            yield from filter(query.matches, page.runs)
            call = page.next_call

    def _send(self, call: ApiCall) -> Any:
        with ExitStack() as files:
            parts = [
                (part.field, (part.filename, files.enter_context(part.path.open("rb")), part.content_type))
                for part in call.files
            ]
            self._scheduler.wait()
            response = self._http.request(
                call.method,
                call.path,
                params=call.params,
                json=call.json,
                data=call.data,
                files=parts or None,
                timeout=call.timeout if call.timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        return decode_and_pace(self._scheduler, self.platform, call, response)

    def close(self) -> None:
        self._http.close()
