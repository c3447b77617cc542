"""``doctor CONN``: a connection checked the way a task uses it, one line per step, each failure with its fix.

Every call is sent once, without the client's retries, so a refusal is reported as the platform gave it (a 429
is the rate limit it sees now, not a wait) and the command ends within a few timeouts. The steps: the connection
resolves (``.connection``), the base URL answers with the scheme and TLS it names (``.probe``), the key
is accepted, a page of runs reads; then what the answers tell: the base path, the clock offset, the rate limit.
"""

from __future__ import annotations

import email.utils
import re
import time
from argparse import Namespace
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_flowruns.cli.checks import Check, Outcome, failed, ok, skipped
from airflow_flowruns.cli.command import command
from airflow_flowruns.cli.connection import connected
from airflow_flowruns.cli.output import emit_json
from airflow_flowruns.cli.probe import probe
from airflow_flowruns.client import FlowRunsClient, decode
from airflow_flowruns.client.body import Answer
from airflow_flowruns.client.errors import readable_answers, reading_body, scrub, translated_errors
from airflow_flowruns.exceptions import FlowRunsAuthError, FlowRunsConfigError, FlowRunsError
from airflow_flowruns.platforms.base import ApiCall, Platform, RunQuery

PAGE_SIZE = 5
CLOCK_TOLERANCE = 30.0
"""Seconds of offset past which the times the platform stamps on runs mislead: they are compared with the local
clock with 30 s of margin by the Extend change feed, a minute by the asset watcher."""
RATE_LIMIT_MARKERS = ("ratelimit", "rate-limit", "retry-after")
AFTER_CONTACT = ("authentication", "runs page", "base path", "clock", "rate limit")
_VERSION_SEGMENT = re.compile(r"/v\d+$")


@dataclass
class Reply:
    """One call sent once: its decoded body or the provider's error, and the headers and time of its answer."""

    call: ApiCall
    body: Any = None
    error: FlowRunsError | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    received: float = 0.0

    @property
    def status(self) -> int | None:
        return getattr(self.error, "status", None) if self.error is not None else 200


@command
def doctor(args: Namespace) -> None:
    with connected(args.conn_id) as hook:
        checks = diagnose(hook.client, hook.flowruns_conn_id, args.flow_id)
    report(checks, args.output)
    if any(check.outcome is Outcome.FAIL for check in checks):
        raise SystemExit(1)


def diagnose(client: FlowRunsClient, conn_id: str, flow_id: str | None) -> list[Check]:
    platform = client.platform
    checks = [ok("connection", f"{conn_id!r}: {platform.label} at {platform.settings.base_url}"), probe(client)]
    if checks[-1].outcome is Outcome.FAIL:
        return checks + [skipped(name, "needs an answer from the base URL") for name in AFTER_CONTACT]
    auth = send_once(client, test_call(platform, flow_id))
    page_check, page = runs_page(client, flow_id, auth)
    replies = [reply for reply in (auth, page) if reply is not None]
    return [
        *checks,
        authentication(auth),
        page_check,
        base_path(platform, auth),
        clock(auth),
        rate_limit(client, replies),
    ]


def test_call(platform: Platform, flow_id: str | None) -> ApiCall:
    """The platform's own test call; where it needs a flow the connection does not name (StackAI's extra
    ``flow_id``), the first page of the flow given with ``--flow``."""
    try:
        return platform.test_call()
    except FlowRunsConfigError:
        if flow_id is None:
            raise
        return platform.list_runs_call(RunQuery(flow_id=flow_id, page_size=1))


def send_once(client: FlowRunsClient, call: ApiCall) -> Reply:
    """``call`` sent as the client sends it (credentials, pacing, size limit), once."""
    reply = Reply(call)
    platform, limit = client.platform, client.options.max_response_bytes
    try:
        with translated_errors(platform, call), client.stream(call) as response:
            reply.headers, reply.received = response.headers, time.time()
            with reading_body(platform, call.name, response.headers, limit) as body:
                for chunk in response.iter_raw():
                    body.feed(chunk)
                answer = Answer(response.status_code, response.headers, body.finish())
            reply.body = decode(platform, call, answer)
    except FlowRunsError as exc:
        reply.error = exc
    return reply


def authentication(reply: Reply) -> Check:
    if reply.error is None:
        return ok("authentication", f"the key was accepted ({reply.call.name!r} answered)")
    fixes = {
        401: "put the platform's current API key in the connection's password field.",
        403: "use a key allowed to read this workspace's flows and runs, or grant this one that permission.",
        404: "see the base path below.",
        429: "see the rate limit below.",
    }
    status = reply.status or 0
    if isinstance(reply.error, FlowRunsAuthError):
        status = 401 if status == 401 else 403
    return failed("authentication", str(reply.error), fixes.get(status, ""))


def runs_page(client: FlowRunsClient, flow_id: str | None, auth: Reply) -> tuple[Check, Reply | None]:
    """The first page of the runs (of ``flow_id``, where given), read once."""
    if auth.error is not None:
        return skipped("runs page", "needs the key accepted"), None
    platform, query = client.platform, RunQuery(flow_id=flow_id, page_size=PAGE_SIZE)
    try:
        call = platform.list_runs_call(query)
    except FlowRunsConfigError as exc:
        return skipped("runs page", f"{exc} (--flow)"), None
    reply = send_once(client, call)
    if reply.error is None:
        try:
            with readable_answers(platform, call.name):
                read = len(platform.parse_runs_page(reply.body, call, query))
            return ok("runs page", f"read {read} run(s) from the first page of {call.name!r}"), reply
        except FlowRunsError as exc:
            reply.error = exc
    return failed("runs page", str(reply.error), ""), reply


def base_path(platform: Platform, auth: Reply) -> Check:
    """Where the calls go; a failure when nothing answers there, or when the host carries another API version
    before the path the provider adds (TableFlow's ``/v2`` after a typed ``/v1``)."""
    base_url, added = platform.settings.base_url, platform.base_path
    lives = f"; {platform.label}'s calls live under {added}, added to a host typed without it" if added else ""
    example = f"put the API's address in the host, e.g. {platform.default_base_url}"
    typed = base_url.removesuffix(added) if added else base_url
    stray = _VERSION_SEGMENT.search(typed) if added else None
    if stray:
        return failed(
            "base path",
            f"the host ends in {stray.group()} before the {added} the calls need{lives}",
            f"remove {stray.group()} from the host; {example}.",
        )
    if auth.status == 404:
        return failed("base path", f"nothing answers {base_url}{auth.call.path}{lives}", f"{example}.")
    return ok("base path", f"calls go to {base_url}/...{lives}")


def clock(auth: Reply) -> Check:
    """The platform's clock against this machine's, from the ``Date`` header (to the second it gives)."""
    try:
        stamped = email.utils.parsedate_to_datetime(auth.headers.get("date", "")).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return skipped("clock", "the platform's answer carried no readable Date header")
    offset = stamped - auth.received
    ahead = "ahead of" if offset > 0 else "behind"
    said = "in step with this machine's" if abs(offset) < 1.5 else f"{abs(offset):.0f} s {ahead} this machine's"
    if abs(offset) <= CLOCK_TOLERANCE:
        return ok("clock", f"the platform's clock is {said}")
    return failed(
        "clock",
        f"the platform's clock is {said}",
        "set this machine's clock by NTP, or have the platform's set: the times it stamps on runs are compared with "
        "this clock, with 30 s of margin in the Extend change feed and a minute in the asset watcher.",
    )


def rate_limit(client: FlowRunsClient, replies: list[Reply]) -> Check:
    options = client.options
    limit = options.max_requests_per_second
    own = (f"max_requests_per_second={limit:g}" if limit else "no max_requests_per_second (slows down on 429s)") + (
        f", max_concurrent_requests={options.max_concurrent_requests}"
    )
    seen = {
        name.lower(): scrub(client.platform, value)
        for reply in replies
        for name, value in reply.headers.items()
        if any(marker in name.lower() for marker in RATE_LIMIT_MARKERS)
    }
    theirs = ", ".join(f"{name}: {value}" for name, value in sorted(seen.items())) or "no rate-limit headers"
    detail = f"connection: {own}; platform: {theirs}"
    if any(reply.status == 429 for reply in replies):
        return failed(
            "rate limit",
            f"the platform refuses this key now (HTTP 429); {detail}",
            "wait, then lower the concurrency of the DAGs on this connection or set the extra max_requests_per_second "
            "under the platform's limit.",
        )
    return ok("rate limit", detail)


def report(checks: list[Check], output: str) -> None:
    if output == "json":
        emit_json([check.to_json() for check in checks])
        return
    width = max(len(check.name) for check in checks)
    for check in checks:
        print("\n".join(check.lines(width)))
