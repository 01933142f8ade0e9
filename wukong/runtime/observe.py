"""The observer seam's API: what a `RuntimeObserver` is told, for observer authors.

Tracing, metrics and the node agent's probe points are observers; see
`wukong.runtime._observer` for the order of events and the rules an observer
follows. An operator author registers observers (`Manager(observers=[...])`)
and needs only `RuntimeObserver` from `wukong.runtime`; the event types an
observer receives live here, beside the cancel reasons that count as failures
and what put a reconcile's key in the queue (`Trigger`, read as `ctx.triggers`).
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
]
