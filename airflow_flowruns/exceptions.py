"""Errors raised by the provider.

Every message names the problem and what to do about it, and never carries an API key: messages are
built only from the platform name, the call name, the HTTP status and the API's own error text, which
is scrubbed of the connection's secrets first (``hooks.http.errors.scrub``).
"""

from __future__ import annotations

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException


class FlowRunsError(AirflowException):
    """Base class: Airflow retries the task according to its ``retries``."""

    outcome_unknown: bool = False
    """Set on the error of a call that changes state (a start) when the platform may still have done it:
    a timeout or a dropped connection after the request went out, a 5xx, an unreadable answer."""


class FlowRunsConfigError(FlowRunsError, AirflowFailException):
    """The task was given something that can never work (bad file, bad parameter, wrong connection).

    It derives from ``AirflowFailException`` so Airflow does not retry a task that would fail the same way.
    """


class FlowRunsApiError(FlowRunsError):
    """The platform answered a call with an error status, or could not be reached."""

    def __init__(
        self,
        *,
        platform: str,
        call: str,
        status: int | None,
        detail: str,
        retryable: bool,
        retry_after: float | None = None,
        hint: str | None = None,
    ) -> None:
        """``hint``: what to check, where the call tells more than its status (see ``_hint``)."""
        self.platform = platform
        self.call = call
        self.status = status
        self.detail = detail
        self.retryable = retryable
        self.retry_after = retry_after
        where = f"HTTP {status}" if status is not None else "no response"
        said = f" {hint}" if hint else _hint(status)
        super().__init__(f"{platform} API call '{call}' failed ({where}): {detail.rstrip('. ')}.{said}")


class FlowRunsAuthError(FlowRunsApiError, AirflowFailException):
    """401/403: retrying with the same key cannot help."""


class FlowRunsTlsError(FlowRunsApiError, AirflowFailException):
    """The host's scheme or the server's certificate does not fit the server (plain HTTP behind ``https://``, TLS
    behind ``http://``, a certificate this machine does not accept): every attempt fails the same way, so none is
    retried, by the client or by Airflow. No request reached the platform."""

    def __init__(self, *, platform: str, call: str, detail: str, fix: str) -> None:
        super().__init__(
            platform=platform, call=call, status=None, detail=detail, retryable=False, hint=fix[:1].upper() + fix[1:]
        )


class FlowRunsResponseError(FlowRunsError):
    """The platform answered with something this provider cannot read (HTML, bad JSON, unknown status).

    ``retryable`` is set for a body that is not JSON at all, which a flaky proxy or a cut connection
    produces; a well-formed answer this provider does not understand is not worth repeating.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class FlowRunsListingError(FlowRunsError):
    """A listing did not reach its last page within its bounds (``client.listing.WalkBounds``): it gave a page it
    had already given, or more pages, runs or seconds than a real listing takes. What was read is not the whole
    listing, so it is neither every run asked for nor proof that a run is absent.

    ``retryable`` is set when the listing ran out of time, which a slow platform may not repeat; a listing that
    repeats its pages or never runs out of them would do the same again.
    """

    def __init__(self, *, platform: str, call: str, reason: str, retryable: bool = False) -> None:
        self.platform = platform
        self.call = call
        self.reason = reason
        self.retryable = retryable
        super().__init__(
            f"{platform} listing '{call}' stopped before its last page: {reason}. What it did not read is not taken "
            "for absent, so nothing was concluded from it. Check the connection's host (a real API neither repeats "
            "a page nor counts them in the billions), or narrow the query: a flow id, states, a shorter window of "
            "creation dates (for the export, a shorter data interval)."
        )


class FlowRunFailedError(FlowRunsError):
    """The remote run ended failed or cancelled, or stopped for review under ``on_review="fail"``."""


class FlowRunRejectedError(FlowRunsError, AirflowFailException):
    """A reviewer rejected the document in Airflow. Not retried: a retry would only ask again about the same
    run, which a retry never replaces while it waits for review."""


class FlowRunTimeoutError(FlowRunsError):
    """The run did not reach a final state before the task's deadline."""


def is_transient(exc: FlowRunsError) -> bool:
    """Whether polling again later may succeed where this attempt (and its retries) failed."""
    return isinstance(exc, FlowRunsApiError | FlowRunsResponseError | FlowRunsListingError) and exc.retryable


_HINTS = {
    400: "Check the task's parameters against the platform's documentation.",
    401: "Check the API key in the connection's password field.",
    402: "The platform account is blocked for usage; check the plan or billing.",
    403: "The key is valid but not allowed to do this; check its workspace and permissions.",
    404: "Check the flow id / run id and the connection's host.",
    413: "A file is larger than the platform accepts; split or compress it.",
    422: "The platform rejected the request's content; see its message above.",
    429: "The platform is rate limiting; lower the task concurrency or set max_requests_per_second.",
}


def _hint(status: int | None) -> str:
    if status is None:
        return " Check the connection's host and the network."
    if 300 <= status < 400:
        return (
            " Redirects are never followed, since they would take the API key to another address: put the API's "
            "final base URL in the connection's host."
        )
    if status >= 500:
        return " The platform had a server error; try again later."
    hint = _HINTS.get(status)
    return f" {hint}" if hint else ""
