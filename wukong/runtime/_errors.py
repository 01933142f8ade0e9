"""Errors the API server returns, as distinct exception types; how a reconcile's
error counts.

Reconcilers branch on these (NotFound: the object is gone; Conflict: re-read and
retry), so each is its own class instead of a status code to compare.

A reconciler ends with an error in one of three ways, as controller-runtime
counts them: an expected failure (an API error, a call that ran out of time, a
connection that failed) is retried with backoff; `TerminalError` says retrying
cannot help and is not retried; any other exception (`KeyError`, `TypeError`,
...) is a bug in the reconciler, Python's equivalent of a Go panic that
controller-runtime recovers: counted as a panic, and retried like an error.
"""

from typing import Any

import aiohttp


class ApiError(Exception):
    """A non-2xx answer from the API server, carrying its `Status` fields."""

    def __init__(self, *, status: int, reason: str, message: str, verb: str, path: str) -> None:
        super().__init__(f"{verb} {path}: {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.verb = verb
        self.path = path


class NotFound(ApiError):
    """404: the object (or its namespace, or its resource type) does not exist."""


class Conflict(ApiError):
    """409 Conflict: the object changed since it was read (stale resourceVersion)."""


class AlreadyExists(ApiError):
    """409 AlreadyExists: create of a name that is taken."""


class Gone(ApiError):
    """410: a watch or list resumed from a resourceVersion that was compacted away."""


class Invalid(ApiError):
    """422: the object failed validation (schema, CEL rule, immutable field)."""


class ApiTimeout(TimeoutError):
    """A call ran out of its time bound before the server answered (`api_timeout`)."""

    def __init__(
        self,
        *,
        verb: str,
        path: str,
        timeout: float | None,
        why: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        bound = f"{timeout:.3f}s" if timeout is not None else "its time bound"
        detail = f" ({why})" if why else ""
        super().__init__(f"{verb} {path}: no answer within {bound}{detail}")
        self.verb = verb
        self.path = path
        self.timeout = timeout
        # Set when the server asked to come back later than the time left: trying
        # again sooner would only add to its load, so the call is not retried.
        self.retry_after = retry_after


class NotLeading(Exception):
    """A write refused before it left the process: this replica no longer leads.

    After leadership is lost another replica may already be writing; the
    manager closes its write fence at once, so no reconcile of this process can
    write again (the `leader_lost` cancel reason), whatever it does with its
    cancellation.
    """

    def __init__(self, *, verb: str, path: str, lease: str) -> None:
        super().__init__(f"{verb} {path}: refused, this replica no longer leads lease {lease}")
        self.verb = verb
        self.path = path
        self.lease = lease


def api_error(*, status: int, body: dict[str, Any] | None, verb: str, path: str) -> ApiError:
    """The exception for an error response, chosen by HTTP status and Status reason."""
    body = body or {}
    reason = str(body.get("reason") or "")
    message = str(body.get("message") or "")
    kinds: dict[int, type[ApiError]] = {404: NotFound, 410: Gone, 422: Invalid}
    cls = kinds.get(status, ApiError)
    if status == 409:
        cls = AlreadyExists if reason == "AlreadyExists" else Conflict
    return cls(status=status, reason=reason, message=message, verb=verb, path=path)


class TerminalError(Exception):
    """Raised by a reconciler when retrying cannot help (controller-runtime's
    `reconcile.TerminalError`): an object that can never be made to work as it is.

    The reconcile counts as an error (`controller_runtime_reconcile_total{result="error"}`,
    `controller_runtime_reconcile_errors_total`) and in
    `controller_runtime_terminal_reconcile_errors_total`, is logged at ERROR, and its key
    is not requeued: the next change of the object (or a resync) reconciles it again.
    Raise it `from` the error that decided it, so the log shows both.
    """


# What a reconciler or validator may fail with without a bug: the API's answers, a call
# out of time (ApiTimeout is a TimeoutError, an OSError), a refused write after a lost
# lease, a connection that failed.
_EXPECTED = (ApiError, NotLeading, TerminalError, OSError, aiohttp.ClientError)


def is_panic(error: BaseException | None) -> bool:
    """Whether `error` is a bug in the code that raised it rather than a failure it
    expects (see the module's docstring): controller-runtime counts such as panics."""
    return isinstance(error, Exception) and not isinstance(error, _EXPECTED)
