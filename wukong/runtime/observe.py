"""The observer seam's API: what a `RuntimeObserver` is told, for observer authors.

Tracing, metrics and the node agent's probe points are observers; see
`wukong.runtime._observer` for the order of events and the rules an observer
follows. An operator author registers observers (`Manager(observers=[...])`)
and needs only `RuntimeObserver` from `wukong.runtime`; the event types an
observer receives live here, beside the cancel reasons that count as failures
and what put a reconcile's key in the queue (`Trigger`, read as `ctx.triggers`),
and `prepare_trace_headers`, for an observer that makes a span current at
STARTED and knows the trace headers its API calls are to send.
"""

from wukong.runtime._cancellation import FAILURE_REASONS, is_failure
from wukong.runtime._context import ReconcileLink, Trigger, TriggerKind
from wukong.runtime._observer import (
    ApiCall,
    ControllerView,
    LifecycleEvent,
    Outcome,
    RuntimeObserver,
    Step,
    WebhookReview,
)
from wukong.runtime._transport import prepare_trace_headers

__all__ = [
    "FAILURE_REASONS",
    "ApiCall",
    "ControllerView",
    "LifecycleEvent",
    "Outcome",
    "ReconcileLink",
    "RuntimeObserver",
    "Step",
    "Trigger",
    "TriggerKind",
    "WebhookReview",
    "is_failure",
    "prepare_trace_headers",
]
