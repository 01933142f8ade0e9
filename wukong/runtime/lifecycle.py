"""Reconcile lifecycle events: the one place tracing and metrics plug into.

The controller emits one `LifecycleEvent` per step of a reconcile's life:

    QUEUED ─► STARTED ─► [CANCEL_REQUESTED ─► [STUCK]] ─► FINISHED ─► [REQUEUED]

- QUEUED: a key was added to the work queue (by a watch event or a requeue).
- STARTED: a worker took it; the context carries the deadline, `due_at` and `link`.
- CANCEL_REQUESTED: someone cancelled it, with a `CancelReason`.
- STUCK: a cancelled reconcile did not unwind within the grace period
  (blocking code, or code that swallows `CancelledError`).
- FINISHED: it ended, with an `Outcome` (and the reason, if cancelled).
- REQUEUED: it was put back, with the requested delay.

Observers are plain callables, called synchronously on the event loop; they
must be quick and must not raise (a failing observer is logged and skipped,
never allowed to break a reconcile).
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from wukong.runtime.context import CancelReason, ReconcileContext, Request, Result

log = logging.getLogger(__name__)


class Step(StrEnum):
    QUEUED = "queued"
    STARTED = "started"
    CANCEL_REQUESTED = "cancel_requested"
    STUCK = "stuck"
    FINISHED = "finished"
    REQUEUED = "requeued"


class Outcome(StrEnum):
    """How a reconcile ended. The first four are controller-runtime's `result` labels."""

    SUCCESS = "success"
    ERROR = "error"
    REQUEUE = "requeue"
    REQUEUE_AFTER = "requeue_after"
    CANCELLED = "cancelled"


@dataclass(frozen=True, kw_only=True)
class LifecycleEvent:
    step: Step
    controller: str
    request: Request
    time: float = field(default_factory=time.time)  # wall clock, for spans and logs
    context: ReconcileContext | None = None  # STARTED and later
    outcome: Outcome | None = None  # FINISHED
    result: Result | None = None  # FINISHED, when the reconciler returned one
    error: BaseException | None = None  # FINISHED with ERROR
    reason: CancelReason | None = None  # CANCEL_REQUESTED, STUCK, FINISHED (cancelled)
    requeue_after: float | None = None  # REQUEUED: the delay asked for
    duration: float | None = None  # FINISHED: seconds spent reconciling


LifecycleObserver = Callable[[LifecycleEvent], None]


class LifecycleHub:
    """Fans lifecycle events out to observers, isolating the runtime from their failures."""

    def __init__(self) -> None:
        self._observers: list[LifecycleObserver] = []

    def subscribe(self, observer: LifecycleObserver) -> None:
        self._observers.append(observer)

    def emit(self, event: LifecycleEvent) -> None:
        for observer in self._observers:
            try:
                observer(event)
            except Exception:
                log.exception("lifecycle observer %r failed on %s", observer, event.step)
