"""The one seam for observing the runtime: `RuntimeObserver`.

Tracing, metrics and the node agent's probe points are observers; so is
anything an operator author wants to add. Register them once:

    manager = Manager(client=client, observers=[tracer, metrics])

and every part of the runtime reports to them, whenever it was created: each
controller (also those added after the observers), its work queue, the
manager's client (every API call, with the reconcile it was made for), leader
election and the event-loop watchdog.

What an observer sees, in the order of a reconcile's life:

    controller_added ─► queue_added ─► queue_got ─► reconcile(STARTED)
        ─► api_call … ─► [reconcile(CANCEL_REQUESTED) ─► [reconcile(STUCK)]]
        ─► reconcile(FINISHED) ─► queue_done ─► [reconcile(REQUEUED), queue_retried]

plus `watch_restarted`, `relisted`, `leadership_changed` and `loop_blocked`
at any time, `webhook_added` once for each webhook the manager serves (before
its first request), and for each admission request a webhook serves:
`admission_started` ─► api_call … ─► `admission_reviewed(WebhookReview)`.

Rules for observers. Every method is called synchronously on the event loop
(the watchdog's reports are handed over to the loop first) and must be quick:
they run inside the reconcile's hot path. Subclass `RuntimeObserver` and
override only what you need; the others are no-ops that cost nothing (the
manager calls only overridden methods). An observer that raises is logged once
per method and counted (`observer_failed` to the other observers); it never
breaks a reconcile, an API call or the election.

A reconcile's STARTED and FINISHED are reported in the task that runs it, so
an observer may make values current for everything the reconcile awaits: set
its contextvars at STARTED, keeping the tokens, and reset them at FINISHED
(what tracing does with its span). The worker task goes on with the next
key: a value left set would still be current there.

A work queue's adds, waits and work times are needed by metrics for every key:
an observer hands the queue the series to record them into itself
(`queue_metrics`, client-go's MetricsProvider), which costs no report.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from wukong.runtime._cancellation import CancelReason

if TYPE_CHECKING:
    from collections.abc import Mapping

    from wukong.runtime._context import ReconcileContext, Request, Result


class Step(StrEnum):
    """A step of a reconcile's life (queueing is reported by the `queue_*` methods)."""

    STARTED = "started"  # a worker took the key; the context carries deadline, due_at, triggers
    CANCEL_REQUESTED = "cancel_requested"  # someone cancelled it, with a reason
    STUCK = "stuck"  # cancelled, but it did not unwind within the grace period
    FINISHED = "finished"  # it ended, with an Outcome (and the reason, if cancelled)
    REQUEUED = "requeued"  # it was put back, with its delay (a RequeueAfter, or a backoff)


class Outcome(StrEnum):
    """How a reconcile ended. The first four are controller-runtime's `result` labels."""

    SUCCESS = "success"
    ERROR = "error"
    REQUEUE = "requeue"
    REQUEUE_AFTER = "requeue_after"
    CANCELLED = "cancelled"


class LifecycleEvent(NamedTuple):
    """One step of one reconcile. `context` identifies it (controller, request, span).

    A named tuple (immutable, like the frozen dataclasses here): every
    reconcile makes two or three. The runtime builds the hot ones (STARTED,
    FINISHED) from all the fields in order (`event_of`), which puts FINISHED's
    before REQUEUED's: by keywords an event took twice as long.
    """

    step: Step
    context: ReconcileContext
    outcome: Outcome | None = None  # FINISHED
    result: Result | None = None  # FINISHED, when the reconciler returned one
    error: BaseException | None = None  # FINISHED with ERROR
    reason: CancelReason | None = None  # CANCEL_REQUESTED, STUCK, FINISHED (cancelled)
    duration: float | None = None  # FINISHED: seconds spent reconciling
    # FINISHED with ERROR: `error` is a bug (an unexpected exception, controller-runtime's
    # recovered panic), not an expected failure.
    panicked: bool = False
    requeue_after: float | None = None  # REQUEUED: the delay until it runs again
    rate_limited: bool = False  # REQUEUED: the delay is a backoff, not a RequeueAfter

    @property
    def controller(self) -> str:
        return self.context.controller

    @property
    def request(self) -> Request:
        return self.context.request


class ApiCall(NamedTuple):
    """One finished API call, with the reconcile it was made for (None outside one).

    A named tuple, as `LifecycleEvent`: every API call makes one (`api_call_of`),
    and a frozen dataclass of these fields took three times as long to build.
    """

    verb: str  # Kubernetes verb: get, list, watch, create, update, patch, delete
    method: str  # HTTP method
    resource: str  # plural, e.g. "wukongs"
    host: str  # host:port of the API server (client-go's `host` label)
    namespace: str | None
    path: str
    status_code: int | None  # None when no answer arrived (timeout, cancellation)
    started: float  # time.time()
    duration: float
    retries: int
    error: BaseException | None
    # Why the call ended early (decided by cancellation.decide_cancel_reason), else None.
    cancel_reason: CancelReason | None = None
    reconcile: ReconcileContext | None = None


# The hot reports built from all their fields, in order, by the tuple's own
# constructor: C, no Python frame (a named tuple's `_make` is one; it also checks
# the count, which tests check instead: test_call_reports, test_running_controller).
event_of: Callable[[tuple[Any, ...]], LifecycleEvent] = functools.partial(
    tuple.__new__, LifecycleEvent
)
api_call_of: Callable[[tuple[Any, ...]], ApiCall] = functools.partial(tuple.__new__, ApiCall)


@dataclass(frozen=True, kw_only=True, slots=True)
class WebhookReview:
    """One admission request a webhook answered (or failed to answer), with its deadline."""

    webhook: str  # the webhook's path, e.g. /validate-wukong (controller-runtime's label)
    uid: str  # the AdmissionReview's request uid ("" when the body was unreadable)
    operation: str  # CREATE, UPDATE, DELETE, CONNECT
    kind: str
    namespace: str | None
    name: str | None
    started: float  # time.time()
    duration: float
    timeout: float  # seconds the API server gives this review (its timeoutSeconds)
    deadline: datetime.datetime  # when the API server stops waiting (UTC)
    allowed: bool | None  # None: no decision (a malformed request)
    reason: str  # machine-readable: Allowed, a rejection's reason, Unverified, BadRequest
    message: str  # what the user sees for a rejection or warning
    code: int  # HTTP status of the answer (200; 400 for a malformed request)
    panicked: bool = False  # the validator raised an unexpected exception (a bug)
    # The request's HTTP headers: the caller's trace context (W3C traceparent) for tracing.
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


class ControllerView(Protocol):
    """What observers may read of a running controller (e.g. gauges at scrape time)."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str:
        """The primary resource's kind, e.g. `Wukong`."""
        ...

    @property
    def max_concurrent_reconciles(self) -> int: ...

    @property
    def active_workers(self) -> int: ...

    def queue_depth(self) -> int: ...

    def processing_seconds(self) -> list[float]:
        """For each key being reconciled, how long since its worker took it."""
        ...

    def in_flight(self) -> list[ReconcileContext]: ...


class CountedSeries(Protocol):
    """A counter series a work queue adds to itself (`value += 1`)."""

    value: float


class TimedSeries(Protocol):
    """A histogram series a work queue observes seconds into itself."""

    def observe(self, amount: float) -> object: ...


class QueueMetrics(Protocol):
    """The series a work queue records into itself, as client-go's queue records into
    its MetricsProvider's: its adds, how long each key waited, how long each was
    worked on. The queue's hot path: no report per key, no look-up by name.
    Called on the event loop; a series that raises is logged once and the queue
    records no more into any of them (it never breaks the queue)."""

    @property
    def adds(self) -> CountedSeries: ...

    @property
    def waited(self) -> TimedSeries: ...

    @property
    def worked(self) -> TimedSeries: ...


class RuntimeObserver(Protocol):
    """Receives every event of the runtime. Subclass it and override what you need."""

    def controller_added(self, controller: ControllerView) -> None:
        """A controller was added to the manager (before or after the manager started)."""
        return None

    def queue_added(self, queue: str) -> None:
        """A key entered `queue` (adds merged by dedup are not counted)."""
        return None

    def queue_got(self, queue: str, waited: float) -> None:
        """A worker took a key that had waited `waited` seconds."""
        return None

    def queue_done(self, queue: str, worked: float) -> None:
        """A worker finished a key after `worked` seconds."""
        return None

    def queue_retried(self, queue: str) -> None:
        """A key was added rate-limited (a retry)."""
        return None

    def queue_metrics(self, queue: str) -> QueueMetrics | None:
        """Series for the work queue `queue` to record into itself (what metrics
        need of every key: `QueueMetrics`), instead of reports. Asked once for each
        queue made (a controller makes a fresh one each time it starts: hand the
        same series again); the first observer to give some gets them. None (the
        default): the queue records nothing itself."""
        return None

    def reconcile(self, event: LifecycleEvent) -> None:
        """A step of a reconcile's life (see `Step`)."""
        return None

    def reconcile_gate(self) -> Callable[[], bool] | None:
        """For an observer whose `reconcile` does something only at times: a quick test
        of whether it would now (the node agent's probe points: while traced). Asked
        once; while the test says False the runtime builds no `LifecycleEvent` for
        this observer. None (the default): `reconcile` always has work."""
        return None

    def api_call(self, call: ApiCall) -> None:
        """An API call of the manager's client finished (successfully or not)."""
        return None

    def watch_restarted(self, resource: str, cause: str) -> None:
        """An informer's watch of `resource` (plural) ended and starts again; `cause` is
        "expired" (the server's timeout: normal), "gone" (410: a relist follows),
        "timeout" (a silent connection) or "error" (the server went away)."""
        return None

    def relisted(self, resource: str, cause: str) -> None:
        """An informer listed `resource` again after its first list (`cause`: "gone")."""
        return None

    def leadership_changed(self, lease: str, leading: bool) -> None:
        """Whether this process leads the Lease named `lease`: False once when it starts
        campaigning, then every change."""
        return None

    def standing_by(self, lease: str) -> None:
        """This replica lost `lease` and stands by (`on_lease_loss="standby"`)."""
        return None

    def shards_changed(self, held: frozenset[int], moved: int, reason: str) -> None:
        """This replica now holds the shards `held`; `moved` shards came or went, because
        of `reason` ("acquired", "rebalance", "lost" or "shutdown")."""
        return None

    def space_conflict(self, conflict: bool) -> None:
        """Whether a live replica of another shard space (another count or key, or
        sharding on against off) keeps this one from taking shards or leading."""
        return None

    def shard_filtering(self, resource: str, where: str) -> None:
        """An informer of `resource` filters its shards `where` ("client": the API server
        ignored or refused its shardSelector)."""
        return None

    def loop_blocked(self, seconds: float, task: str | None) -> None:
        """The event loop was blocked for `seconds` while `task` ran (None: no task)."""
        return None

    def webhook_added(self, webhook: str) -> None:
        """A webhook is served at path `webhook`, before its first request."""
        return None

    def admission_started(self, webhook: str) -> None:
        """A webhook (by path) took an admission request (for in-flight gauges)."""
        return None

    def admission_reviewed(self, review: WebhookReview) -> None:
        """A webhook answered an admission request (after `admission_started`)."""
        return None

    def observer_failed(self, observer: str, method: str) -> None:
        """Another observer raised in `method` (it is logged once per method, then counted)."""
        return None
