"""A controller: watches turn into queued requests; workers reconcile them.

Observe / queue / act, as in controller-runtime:

- Observe: informers for the primary kind, for kinds it *owns* (events map to
  the owner named by a controller ownerReference) and for other *watched*
  kinds (a map function returns the requests, often through a cache index).
- Queue: a `WorkQueue` deduplicates keys, never gives one key to two workers,
  and delays retries (rate limiter) and `RequeueAfter`s.
- Act: `max_concurrent_reconciles` workers each take a key and run one
  reconcile as its own task under a deadline (see `context`).

How a reconcile ends, and what follows:

| ends with                        | outcome        | then                           |
| -------------------------------- | -------------- | ------------------------------ |
| `Result()`                       | success        | forget backoff                 |
| `Result(requeue_after=s)`        | requeue_after  | forget backoff, add after `s`  |
| `Result(requeue=True)`           | requeue        | add rate-limited               |
| an exception                     | error          | add rate-limited, log ERROR    |
| cancelled (any `CancelReason`)   | cancelled      | add rate-limited, log DEBUG    |
| `ApiTimeout` raised              | cancelled      | same, reason `api_timeout`     |

Cancellation is a normal event: it is never logged at ERROR. A cancelled
reconcile that does not unwind within `cancel_grace` (blocking code, or code
that swallows `CancelledError`) is reported as STUCK at WARNING; its key stays
reserved until it really ends, because two reconciles of one object at once
would be worse than a late one.
"""

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from wukong.runtime.client import Client, Object
from wukong.runtime.context import CancelReason, ReconcileContext, Request, Result
from wukong.runtime.errors import ApiTimeout
from wukong.runtime.informer import EventHandler, Informer
from wukong.runtime.lifecycle import LifecycleEvent, LifecycleHub, Outcome, Step
from wukong.runtime.ratelimit import RateLimiter
from wukong.runtime.resources import Resource
from wukong.runtime.workqueue import QueueShutDown, Ticket, WorkQueue

log = logging.getLogger(__name__)

DEFAULT_RECONCILE_TIMEOUT = 15.0

MapFunc = Callable[[Object], Iterable[Request]]


class Reconciler(Protocol):
    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result: ...


@dataclass(frozen=True)
class Watch:
    """Reconcile primaries returned by `map_func` whenever a `resource` object changes."""

    resource: Resource
    map_func: MapFunc


@dataclass(frozen=True, kw_only=True)
class ControllerOptions:
    max_concurrent_reconciles: int = 1
    # None: the manager's default (`--reconcile-timeout`, 15 s unless set).
    reconcile_timeout: float | None = None
    # How long a cancelled reconcile may take to unwind before it is reported stuck.
    cancel_grace: float = 5.0
    rate_limiter: RateLimiter | None = None


@dataclass(kw_only=True)
class Controller:
    """Reconciles one primary kind. Register it with a `Manager`, which runs it."""

    name: str
    reconciler: Reconciler
    primary: Resource
    owns: Sequence[Resource] = ()
    watches: Sequence[Watch] = ()
    options: ControllerOptions = field(default_factory=ControllerOptions)

    def __post_init__(self) -> None:
        if self.options.max_concurrent_reconciles < 1:
            raise ValueError("max_concurrent_reconciles must be at least 1")
        if self.options.reconcile_timeout is not None and self.options.reconcile_timeout <= 0:
            raise ValueError("reconcile_timeout must be positive")
        self.reconcile_timeout = self.options.reconcile_timeout or DEFAULT_RECONCILE_TIMEOUT
        self.queue = WorkQueue(name=self.name, rate_limiter=self.options.rate_limiter)
        self.lifecycle = LifecycleHub()
        self._in_flight: dict[Request, ReconcileContext] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._client: Client | None = None
        self._logger = logging.getLogger(f"wukong.controller.{self.name}")

    # -- wiring (by the manager) ------------------------------------------------------

    def bind(self, *, informer_for: Callable[[Resource], Informer]) -> None:
        """Connect event handlers to the manager's shared informers."""
        primary = self._handler(lambda obj: [_request_of(obj)])
        informer_for(self.primary).add_handler(
            EventHandler(
                on_add=primary.on_add,
                on_update=primary.on_update,
                on_delete=self._on_primary_deleted,
            )
        )
        for owned in self.owns:
            informer_for(owned).add_handler(self._handler(self._owners_of))
        for watch in self.watches:
            informer_for(watch.resource).add_handler(self._handler(watch.map_func))

    def enqueue(self, request: Request, *, link: object | None = None) -> None:
        self.queue.add(request, link=link)
        self.lifecycle.emit(LifecycleEvent(step=Step.QUEUED, controller=self.name, request=request))

    def _handler(self, requests_of: MapFunc) -> EventHandler:
        """Enqueue what `requests_of` returns for every version an event shows."""

        def on_change(obj: Object) -> None:
            for request in requests_of(obj):
                self.enqueue(request)

        def on_update(old: Object, new: Object) -> None:
            # Both versions: a changed owner or reference must reach both sides.
            on_change(old)
            on_change(new)

        return EventHandler(on_add=on_change, on_update=on_update, on_delete=on_change)

    def _on_primary_deleted(self, obj: Object) -> None:
        request = _request_of(obj)
        ctx = self._in_flight.get(request)
        if ctx is not None:
            self._cancel(ctx, CancelReason.DELETED)
        self.enqueue(request)

    def _owners_of(self, obj: Object) -> list[Request]:
        group = self.primary.group
        return [
            Request(obj["metadata"].get("namespace", ""), ref["name"])
            for ref in obj["metadata"].get("ownerReferences") or []
            if ref.get("controller")
            and ref.get("kind") == self.primary.kind
            and ref.get("apiVersion", "").rpartition("/")[0] == group
        ]

    # -- running ---------------------------------------------------------------------

    def start(self, *, client: Client) -> None:
        """Start the workers (the manager does this once caches are synced)."""
        self._client = client
        for index in range(self.options.max_concurrent_reconciles):
            self._workers.append(
                asyncio.create_task(self._worker(), name=f"worker {self.name}/{index}")
            )

    @property
    def active_workers(self) -> int:
        return len(self._in_flight)

    def in_flight(self) -> list[ReconcileContext]:
        return list(self._in_flight.values())

    async def stop(self, *, reason: CancelReason, grace: float) -> None:
        """Stop taking work, cancel reconciles in flight with `reason`, wait up to `grace`."""
        self.queue.shut_down()
        for ctx in list(self._in_flight.values()):
            self._cancel(ctx, reason)
        if not self._workers:
            return
        _, pending = await asyncio.wait(self._workers, timeout=grace)
        for worker in pending:
            log.warning(
                "controller %s: worker %s did not stop within %.1fs",
                self.name,
                worker.get_name(),
                grace,
            )
            worker.cancel()
        self._workers.clear()

    async def _worker(self) -> None:
        while True:
            try:
                ticket = await self.queue.get()
            except QueueShutDown:
                return
            if self.queue.shutting_down:
                # The queue still hands out keys that were waiting when it shut
                # down; starting new reconciles now would only delay the exit.
                self.queue.done(ticket.key)
                return
            try:
                await self._reconcile(ticket)
            finally:
                self.queue.done(ticket.key)

    async def _reconcile(self, ticket: Ticket) -> None:
        assert self._client is not None
        request = ticket.key
        assert isinstance(request, Request)
        ctx = ReconcileContext(
            controller=self.name,
            request=request,
            timeout=self.reconcile_timeout,
            client=self._client,
            logger=self._logger,
            due_at=ticket.due_at,
            link=ticket.link,
        )
        self.lifecycle.emit(
            LifecycleEvent(step=Step.STARTED, controller=self.name, request=request, context=ctx)
        )
        # Created after STARTED so observers can prepare ctx.task_context
        # (e.g. the current span) for everything the reconcile awaits.
        task = asyncio.create_task(
            self.reconciler.reconcile(ctx, request),
            name=f"reconcile {self.name} {request}",
            context=ctx.task_context,
        )
        ctx.attach(task)
        self._in_flight[request] = ctx
        ctx.logger.debug("reconcile started (deadline in %.1fs)", ctx.timeout)
        loop = asyncio.get_running_loop()
        # The deadline is a timer on the loop, not a wait_for around the task:
        # the reconcile keeps running in its own task so that a reconcile that
        # ignores cancellation can be seen (STUCK) rather than abandoned.
        expiry = loop.call_at(ctx.deadline, self._cancel, ctx, CancelReason.DEADLINE_EXCEEDED)
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            # The worker itself is being cancelled from outside: pass it on.
            self._cancel(ctx, CancelReason.PARENT_CANCELLED)
            await asyncio.wait({task})
            raise
        finally:
            expiry.cancel()
            del self._in_flight[request]
            self._finish(ctx, task)

    def _cancel(self, ctx: ReconcileContext, reason: CancelReason) -> None:
        if not ctx.cancel(reason):
            return
        self.lifecycle.emit(
            LifecycleEvent(
                step=Step.CANCEL_REQUESTED,
                controller=self.name,
                request=ctx.request,
                context=ctx,
                reason=reason,
            )
        )
        loop = asyncio.get_running_loop()
        loop.call_later(self.options.cancel_grace, self._report_if_stuck, ctx)

    def _report_if_stuck(self, ctx: ReconcileContext) -> None:
        if self._in_flight.get(ctx.request) is not ctx:
            return
        ctx.logger.warning(
            "reconcile did not stop %.1fs after it was cancelled (%s): blocking code, or "
            "CancelledError swallowed? The key stays reserved until it ends",
            self.options.cancel_grace,
            ctx.cancel_reason,
        )
        self.lifecycle.emit(
            LifecycleEvent(
                step=Step.STUCK,
                controller=self.name,
                request=ctx.request,
                context=ctx,
                reason=ctx.cancel_reason,
            )
        )

    def _finish(self, ctx: ReconcileContext, task: "asyncio.Task[Result]") -> None:
        request = ctx.request
        result: Result | None = None
        error: BaseException | None = None
        if task.cancelled():
            outcome = Outcome.CANCELLED
            ctx.record_reason(CancelReason.PARENT_CANCELLED)
        else:
            error = task.exception()
            if isinstance(error, ApiTimeout):
                outcome = Outcome.CANCELLED
                # A call bounded by the deadline itself timing out is the deadline's doing.
                past_deadline = ctx.remaining() <= 0
                ctx.record_reason(
                    CancelReason.DEADLINE_EXCEEDED if past_deadline else CancelReason.API_TIMEOUT
                )
            elif error is not None:
                outcome = Outcome.ERROR
            else:
                result = task.result()
                if not isinstance(result, Result):
                    error = TypeError(f"reconcile returned {result!r}, not a Result")
                    outcome, result = Outcome.ERROR, None
                elif result.requeue_after > 0:
                    outcome = Outcome.REQUEUE_AFTER
                elif result.requeue:
                    outcome = Outcome.REQUEUE
                else:
                    outcome = Outcome.SUCCESS

        reason = ctx.cancel_reason if outcome is Outcome.CANCELLED else None
        duration = ctx.elapsed()
        if outcome is Outcome.CANCELLED:
            # Normal in a controller's life: DEBUG, with the reason, then requeue.
            ctx.logger.debug(
                "reconcile cancelled after %.3fs: reason=%s",
                duration,
                reason,
                extra={"cancel_reason": str(reason)},
            )
        elif outcome is Outcome.ERROR:
            ctx.logger.error("reconcile failed after %.3fs: %s", duration, error, exc_info=error)
        else:
            ctx.logger.debug("reconcile finished after %.3fs: %s", duration, outcome)
        self.lifecycle.emit(
            LifecycleEvent(
                step=Step.FINISHED,
                controller=self.name,
                request=request,
                context=ctx,
                outcome=outcome,
                result=result,
                error=error,
                reason=reason,
                duration=duration,
            )
        )
        self._requeue(ctx, outcome, result)

    def _requeue(self, ctx: ReconcileContext, outcome: Outcome, result: Result | None) -> None:
        request = ctx.request
        if self.queue.shutting_down:
            return
        if outcome is Outcome.SUCCESS:
            self.queue.forget(request)
            return
        if outcome is Outcome.REQUEUE_AFTER:
            assert result is not None
            self.queue.forget(request)
            delay = result.requeue_after
            self.queue.add_after(request, delay, link=ctx.as_link())
        else:
            delay = None
            self.queue.add_rate_limited(request, link=ctx.as_link())
        self.lifecycle.emit(
            LifecycleEvent(
                step=Step.REQUEUED,
                controller=self.name,
                request=request,
                context=ctx,
                requeue_after=delay,
            )
        )


def _request_of(obj: Object) -> Request:
    metadata = obj["metadata"]
    return Request(metadata.get("namespace") or "", metadata["name"])
