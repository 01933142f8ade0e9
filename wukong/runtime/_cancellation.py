"""Why a reconcile or an API call stopped early: the cancel reasons, decided in one place.

One label set everywhere (metrics, spans, logs, probes). Who cancels a
reconcile records the reason on its context *before* cancelling its task
(see `context.ReconcileContext.cancel`), so the `CancelledError` that surfaces
at whatever the reconcile was awaiting can always be attributed. What cannot
be attributed that way (a call that ran out of its own time, a task cancelled
from outside) is decided by `decide_cancel_reason`, the only function that
maps an exception to a reason: the controller uses it when a reconcile ends,
the client when an API call ends.
"""

import asyncio
from enum import StrEnum

from wukong.runtime._errors import ApiTimeout, NotLeading


class CancelReason(StrEnum):
    """Why a reconcile stopped early. One label set for metrics, spans, logs and probes."""

    DEADLINE_EXCEEDED = "deadline_exceeded"
    SHUTDOWN = "shutdown"
    LEADER_LOST = "leader_lost"
    DELETED = "deleted"  # the object went away while it was being reconciled
    API_TIMEOUT = "api_timeout"  # one API call ran out of its own time
    PARENT_CANCELLED = "parent_cancelled"  # cancelled from outside, no reason given


#: Cancellations that mean work did not finish in time: errors to metrics, spans
#: and alerts (and, for the reconcile's own deadline, a timeout). Every other
#: reason is a stop the operator chose or was told to make (shutdown, leadership
#: moving on, the object gone, a caller's cancel): normal, never an error.
FAILURE_REASONS = frozenset({CancelReason.DEADLINE_EXCEEDED, CancelReason.API_TIMEOUT})


def is_failure(reason: CancelReason) -> bool:
    """Whether a cancellation for `reason` counts as an error (see `FAILURE_REASONS`)."""
    return reason in FAILURE_REASONS


def decide_cancel_reason(
    error: BaseException | None, *, recorded: CancelReason | None, deadline_passed: bool
) -> CancelReason | None:
    """The reason `error` ended a reconcile or a call early; None if it was no cancellation.

    - `CancelledError`: the reason recorded by whoever cancelled, else
      `parent_cancelled` (a task cancelled from outside, with nothing recorded).
    - `ApiTimeout`: `api_timeout` when the call ran out of its own time; when
      the reconcile's deadline had passed too, the deadline bounded the call,
      so it is the deadline's doing (`deadline_exceeded`).
    - `NotLeading`: a write refused after leadership was lost (`leader_lost`).
    """
    if isinstance(error, NotLeading):
        return CancelReason.LEADER_LOST
    if isinstance(error, asyncio.CancelledError):
        return recorded or CancelReason.PARENT_CANCELLED
    if isinstance(error, ApiTimeout):
        return CancelReason.DEADLINE_EXCEEDED if deadline_passed else CancelReason.API_TIMEOUT
    return None
