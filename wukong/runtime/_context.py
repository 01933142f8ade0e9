"""The reconcile context: one reconcile's request, deadline and cancel reason.

Lifecycle. The controller creates a `ReconcileContext` when it takes a key
from the queue, runs `reconciler.reconcile(ctx, request)` in one of its worker
tasks (a new one, or one that has just ended another reconcile), and watches
`ctx.deadline`. Whoever stops the reconcile early (the deadline, shutdown,
leader-election loss, the object's deletion) calls `ctx.cancel(reason)`: the
reason is recorded *first*, then the task is really cancelled, so the
`CancelledError` raised at the reconcile's current `await` (an API call in
flight included) can always be attributed. Only the first reason counts: a
deadline that fires while shutdown is already cancelling the task does not
overwrite `shutdown` (double cancel is a no-op for the reason). Once the
reconcile has ended (`_release`), `cancel` does nothing: its task may have gone
on to another reconcile.

The context is passed explicitly to `reconcile`; reconcilers must not keep it
after returning. While it runs it is also the current reconcile of its task's
contextvars (`current_reconcile`), as controller-runtime's reconcile identity
travels in its `context.Context`: the manager's call layer (`_calls`) finds it there, so
every API call made while the reconcile runs (through `ctx.client` or any of
the manager's clients, from its task or tasks it starts) gets at most
`ctx.remaining()`, and is reported to observers as this reconcile's. The
client itself knows nothing of reconciles.

`ctx.span` is the reconcile's OpenTelemetry span when tracing is on (the
tracing observer sets it at STARTED and makes it current in the reconcile's
task), else the span current where the reconcile runs, if any, else None.

`ctx.triggers` says why the reconcile runs at all: what put its key in the
queue (a watch event and how it mapped to this key, a requeue and the
reconcile that asked for it, the sync period, a call from code), oldest first.
The queue coalesces adds of a key that waits; the first few of them are kept
(`_workqueue.MAX_TRIGGERS`) and `ctx.trigger_count` counts them all.
"""

import asyncio
import contextvars
import datetime
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from opentelemetry import trace

from wukong.runtime._cancellation import CancelReason
from wukong.runtime._client import Client

# The reconcile the current task works for; set in each reconcile task's contextvars.
_CURRENT: contextvars.ContextVar["ReconcileContext | None"] = contextvars.ContextVar(
    "wukong_reconcile", default=None
)

#: Seconds a reconcile may run before it is cancelled (`CancelReason.DEADLINE_EXCEEDED`),
#: unless the manager or controller says otherwise (`ManagerOptions.reconcile_timeout`,
#: `wukong run --reconcile-timeout`).
DEFAULT_RECONCILE_TIMEOUT = 15.0

__all__ = [
    "DEFAULT_RECONCILE_TIMEOUT",
    "CancelReason",
    "ReconcileContext",
    "ReconcileLink",
    "Request",
    "Result",
    "Trigger",
    "TriggerKind",
]


class Request(NamedTuple):
    """What to reconcile: an object's namespace and name (namespace "" if cluster-scoped).

    A named tuple rather than a dataclass: every reconcile hashes its request
    a dozen times (queue, rate limiter, in-flight map), and a tuple's hash is
    computed in C where a dataclass's runs Python code.
    """

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@dataclass(frozen=True)
class Result:
    """What the reconciler asks for next, with controller-runtime's semantics.

    `requeue_after > 0`: reconcile again after that many seconds (the rate
    limiter is reset). `requeue`: reconcile again with rate-limited backoff.
    Neither: done until something changes.
    """

    requeue: bool = False
    requeue_after: float = 0.0


class ReconcileLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Adds the reconcile's identity (and its span's ids, once traced) to every record.

    It keeps call-site `extra` too (the stock LoggerAdapter replaces it), and
    reads the ids from the context, not from the current task, so lines the
    controller logs about a reconcile carry its trace id as well.
    """

    def __init__(self, logger: logging.Logger, ctx: "ReconcileContext") -> None:
        super().__init__(logger, {})
        self._ctx = ctx

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        ctx = self._ctx
        extra = {
            "controller": ctx.controller,
            "object_namespace": ctx.request.namespace,
            "object_name": ctx.request.name,
            "reconcile_id": ctx.reconcile_id,
        }
        span_context = getattr(ctx.span, "get_span_context", None)
        if span_context is not None:
            ids = span_context()
            if ids.is_valid:
                extra["trace_id"] = f"{ids.trace_id:032x}"
                extra["span_id"] = f"{ids.span_id:016x}"
        kwargs["extra"] = {**extra, **(kwargs.get("extra") or {})}
        return msg, kwargs


class ReconcileLink(NamedTuple):
    """A pointer from a requeued reconcile back to the one that scheduled it.

    Tracing turns it into a span link so a chain of requeues can be followed.
    A named tuple: every requeue makes one (with its `Trigger`), and a tuple is
    built in half the time of a frozen dataclass.
    """

    controller: str
    reconcile_id: str
    span: Any  # the scheduling reconcile's span, if traced


class TriggerKind(StrEnum):
    """What put a key in the queue: the `trigger` label and span attribute values."""

    EVENT = "event"  # a watch event of the primary, an owned child or a watched object
    REQUEUE_AFTER = "requeue_after"  # a reconcile returned Result(requeue_after=s)
    REQUEUE = "requeue"  # a reconcile returned Result(requeue=True): rate limited
    ERROR_BACKOFF = "error_backoff"  # a reconcile failed: rate limited
    CANCELLED_BACKOFF = "cancelled_backoff"  # a reconcile was cancelled: capped backoff
    SYNC_PERIOD = "sync_period"  # the periodic resync of the informers' caches
    MANUAL = "manual"  # code asked for it (`RunningController.enqueue`: a webhook, a CLI)


class Trigger(NamedTuple):
    """One reason a reconcile runs: what added its key to the queue.

    Fields that do not apply to the kind are None. A named tuple, as every
    reconcile's requeue makes one.
    """

    kind: TriggerKind
    #: Requeues: the reconcile that asked for this one.
    link: ReconcileLink | None = None
    #: Events: ADDED, MODIFIED or DELETED (None for the sync period's replay).
    event: str | None = None
    #: Events, sync period: the object that changed (or was resynced).
    object_kind: str | None = None
    namespace: str | None = None
    name: str | None = None
    resource_version: str | None = None
    #: Events, sync period: how the object became this key: "primary" (the object
    #: itself), "owner" (a child, through its controller ownerReference) or
    #: "map:<function>" (a watched object, through the watch's map function).
    mapping: str | None = None
    #: Manual: who asked (the `source` given to `enqueue`).
    source: str | None = None

    def __str__(self) -> str:
        """A short line for a span or a log: "MODIFIED ConfigMap ns/a rv=12 via owner"."""
        kind = self.kind
        if kind is TriggerKind.EVENT or kind is TriggerKind.SYNC_PERIOD:
            what = self.event if kind is TriggerKind.EVENT else "sync_period"
            where = f"{self.namespace}/{self.name}" if self.namespace else self.name
            version = f" rv={self.resource_version}" if self.resource_version else ""
            return f"{what} {self.object_kind} {where}{version} via {self.mapping}"
        if kind is TriggerKind.MANUAL:
            return f"manual by {self.source}"
        if self.link is not None:
            return f"{kind} by reconcile {self.link.reconcile_id}"
        return str(kind)


class ReconcileContext:
    """Everything one reconcile needs to know about its own lifecycle.

    `triggers`: why it runs, what queued its key, oldest first (the queue keeps
    the first few); `trigger_count`: how many adds of the key it serves (the
    queue coalesced them).
    """

    def __init__(
        self,
        *,
        controller: str,
        request: Request,
        timeout: float,
        client: Client,
        logger: logging.Logger,
        due_at: float | None = None,
        triggers: tuple[Trigger, ...] = (),
        trigger_count: int = 0,
        call_share: float = 1.0,
        context: contextvars.Context | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """`context`: the contextvars the reconcile's task starts from (a copy is
        made; default: the current ones). `clock`: the running loop's time (default:
        `loop.time`; a controller passes it, as looking the loop up costs a system call)."""
        if clock is None:
            clock = asyncio.get_running_loop().time
        self._clock = clock
        self.controller = controller
        self.request = request
        self.timeout = timeout
        self.started = clock()
        self._started_unix = time.time()  # as datetimes only when asked (tracing)
        self.deadline = self.started + timeout
        # 64 random bits: unique enough for a log line, without a system call.
        self.reconcile_id = f"{random.getrandbits(64):016x}"
        self.client = client
        self.call_share = call_share  # of the time left to the deadline, per API call
        self._base_logger = logger
        # Set by the queue: when a RequeueAfter was due (lateness = started - due_at),
        # and what queued the key: why this reconcile runs, oldest first (the queue
        # keeps the first few; `trigger_count` counts every add it coalesced). Plain
        # attributes, read by observers as each reconcile ends; not to be changed
        # (`triggers` is the queue ticket's own tuple).
        self.due_at = due_at
        self.triggers: tuple[Trigger, ...] = triggers
        self.trigger_count = trigger_count
        # Set by an observer at STARTED (the tracer), else the span found current at
        # `_attach` (`_found_span`: kept for the next reconcile of the same task).
        self.span: Any = None
        self._found_span: Any = _UNSEEN
        # Contextvars naming this reconcile, as the worker had them when it was made:
        # where `_attach` looks for a span current, and for a task that runs one of
        # its calls elsewhere (`asyncio.create_task(..., context=...)`).
        self._task_context = contextvars.copy_context() if context is None else context.copy()
        self._task_context.run(_CURRENT.set, self)
        self._cancel_reason: CancelReason | None = None
        self._cancel_sent = False  # `cancel` cancelled its task (once: see `_release`)
        self._task: asyncio.Task[Any] | None = None
        self._cut_call: str | None = None  # the API call a cancellation cut short

    @property
    def logger(self) -> ReconcileLogger:
        """The controller's logger, adding this reconcile's identity to every record.

        Made on each use, never kept: kept on the context it would name the context
        back (a reference cycle per reconcile that logs, freed only by the collector).
        """
        return ReconcileLogger(self._base_logger, self)

    @property
    def started_wall(self) -> datetime.datetime:
        """When the reconcile started, wall-clock time (UTC)."""
        return datetime.datetime.fromtimestamp(self._started_unix, datetime.UTC)

    @property
    def deadline_wall(self) -> datetime.datetime:
        """The deadline, wall-clock time (UTC)."""
        return datetime.datetime.fromtimestamp(self._started_unix + self.timeout, datetime.UTC)

    @property
    def link(self) -> ReconcileLink | None:
        """The reconcile that asked for this one (the first requeue trigger's), if any."""
        for trigger in self.triggers:
            if trigger.link is not None:
                return trigger.link
        return None

    def as_link(self) -> ReconcileLink:
        return ReconcileLink(self.controller, self.reconcile_id, self.span)

    def remaining(self) -> float:
        """Seconds left before the deadline (negative once it has passed)."""
        return self.deadline - self._clock()

    def elapsed(self) -> float:
        return self._clock() - self.started

    @property
    def cancel_reason(self) -> CancelReason | None:
        return self._cancel_reason

    def _attach(
        self, task: "asyncio.Task[Any]", *, previous: "ReconcileContext | None" = None
    ) -> None:
        """Bind the task that runs this reconcile (done by the controller, after STARTED,
        from that task's step: the body runs in it, nothing can cancel it before).

        `previous`: the reconcile the task ran before this one, in the same
        contextvars (so the same span current, if it looked one up)."""
        self._task = task
        if previous is not None:
            self._found_span = previous._found_span
        if self.span is not None:
            return  # an observer's (the tracer's), set at STARTED: nothing to look up
        if self._found_span is _UNSEEN:
            span = self._task_context.run(trace.get_current_span)
            # INVALID_SPAN is what an untraced reconcile finds: no span context to ask.
            valid = span is not trace.INVALID_SPAN and span.get_span_context().is_valid
            self._found_span = span if valid else None
        self.span = self._found_span

    def _enter(self) -> None:
        """Make it the current reconcile of the running task (the controller's worker,
        which runs it in its own contextvars, not in `_task_context`)."""
        _CURRENT.set(self)

    def _release(self) -> None:
        """The reconcile ended (called from its task): it cannot be cancelled any more
        (the task may go on to another reconcile), and the contextvars stop naming it.

        They hold the context and the context holds them (and its task): a
        reference cycle that only the garbage collector's next pass would free,
        taking every reconcile's objects with it into the older generations.
        """
        self._task = None
        self._task_context = _SPENT
        _CURRENT.set(None)

    def cancel(self, reason: CancelReason) -> bool:
        """Record `reason` and cancel the reconcile task; False if already cancelling or ended."""
        if self._cancel_reason is not None or self._task is None or self._task.done():
            return False
        self._cancel_reason = reason
        self._cancel_sent = True
        self._task.cancel(msg=reason.value)
        return True

    @property
    def cut_call(self) -> str | None:
        """The API call in flight when the reconcile was cut short ("get configmaps after
        0.998s"), if one was."""
        return self._cut_call

    def _note_cut_call(self, description: str) -> None:
        self._cut_call = description

    def _record_reason(self, reason: CancelReason) -> None:
        """Record why the reconcile ended early when nobody called `cancel` (e.g. api_timeout)."""
        if self._cancel_reason is None:
            self._cancel_reason = reason

    def __repr__(self) -> str:
        return f"<ReconcileContext {self.controller} {self.request} id={self.reconcile_id}>"


# A reconcile's `_found_span` before anyone looked for a current span.
_UNSEEN: Any = object()
# What an ended reconcile's `_task_context` becomes: it no longer names the reconcile.
_SPENT = contextvars.Context()


def current_reconcile() -> ReconcileContext | None:
    """The reconcile the running task works for, if any."""
    return _CURRENT.get()


def outside_reconcile() -> contextvars.Context:
    """A copy of the current contextvars with no reconcile in it: for a task that
    outlives the reconcile that started it (an informer added by a reconcile)."""
    context = contextvars.copy_context()
    context.run(_CURRENT.set, None)
    return context
