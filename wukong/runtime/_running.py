"""A controller's running state: its queue and the reconciles in flight.

`Manager.add(controller)` creates one `RunningController` per `Controller`
(the configuration), wired to the manager's shared informers, client and
observers; the manager starts it once caches are synced and stops it on
shutdown or leadership loss.

Up to `max_concurrent_reconciles` reconciles run at once (client-go's
workers), each in a worker task that holds one place. No worker waits idle on
the queue: when a key is added and a place is free (the queue calls
`_dispatch` from the add that made it ready) a worker task is started, which
takes a key at its first step; when a reconcile ends its task reports it,
requeues it, and takes the next waiting key in the same step, running its
reconcile there too, and ends only when no key waits. A no-op reconcile of a
busy controller thus costs no task, no done callback and no turn of the event
loop of its own (each costs about as much as the reconcile's own
bookkeeping); keys that come due together are served back to back, as
controller-runtime's worker goroutines do. Taking a key, a worker first brings
in the delayed keys (requeues, retries) that came due while it ran: a key due
during a run of reconciles is served in that run, without waiting for the
loop's next turn to run the queue's alarm. After a millisecond of reconciles
(`_TURN`) a worker ends, between two keys, so that the loop runs other
callbacks; a new worker takes the next key after them.

A worker goes on with the next key only as it was: a reconcile that set
contextvars of its own, or that was cancelled, ends its task after it, so that
nothing of one reconcile reaches the next (those its observers set for it,
such as tracing's current span, are taken back when it ends); a reconcile that
ignores its cancellation keeps its task, its place and its key until it ends,
as before.

Cancellation is a normal event: it is never logged at ERROR. A cancelled
reconcile that does not unwind within `cancel_grace` (blocking code, or code
that swallows `CancelledError`) is reported as STUCK at WARNING; its key stays
reserved until it really ends, because two reconciles of one object at once
would be worse than a late one.

Every add to the queue says why (a `Trigger`): the watch event and how it
mapped to the key (the primary itself, an owned child through its
ownerReference, a watched object through its watch's map function), the
resync, a requeue with a link to the reconcile that asked for it, or a call
of `enqueue`. The queue hands them to the reconcile (`ctx.triggers`). One
trigger per event is shared by every key it maps to; a requeue makes one.
"""

import asyncio
import contextvars
import logging
import math
import time
from collections.abc import Callable

from wukong.runtime._alarm import Alarm, loop_clock
from wukong.runtime._cache import Store
from wukong.runtime._cancellation import CancelReason, decide_cancel_reason
from wukong.runtime._client import Client, Object
from wukong.runtime._context import ReconcileContext, Request, Result, Trigger, TriggerKind
from wukong.runtime._controller import Controller, MapFunc
from wukong.runtime._errors import TerminalError, is_panic
from wukong.runtime._fanout import listener
from wukong.runtime._informer import EventHandler, Informer
from wukong.runtime._observer import LifecycleEvent, Outcome, RuntimeObserver, Step, event_of
from wukong.runtime._scopes import NamespaceScopes
from wukong.runtime._workqueue import WorkQueue
from wukong.runtime.resources import Resource

log = logging.getLogger("wukong.runtime.controller")


class RunningController:
    """One controller at work. Implements `observer.ControllerView` for observers."""

    def __init__(
        self,
        controller: Controller,
        *,
        client: Client,
        observer: RuntimeObserver,
        reconcile_timeout: float,
        scopes: NamespaceScopes | None = None,
    ) -> None:
        self.config = controller
        # Shared by the manager's controllers, so deleting a namespace reaches all of them.
        self._scopes = scopes if scopes is not None else NamespaceScopes()
        self.reconcile_timeout = controller.options.reconcile_timeout or reconcile_timeout
        self.queue = self._new_queue(observer)
        self._client = client
        self._observer = observer
        # Resolved once (None: nobody listens, and no event is built), with the test
        # of whether anyone would act on one now (None: always; see `_reporter`).
        self._report = listener(observer, "reconcile")
        self._report_gate = observer.reconcile_gate() if self._report is not None else None
        self._in_flight: dict[Request, ReconcileContext] = {}
        # Not yet ended, in the order they started: each reconcile's task and the
        # queue it came from. Every reconcile of a controller has the same timeout,
        # so this is also the order of their deadlines: one alarm, set for the
        # first deadline still to come, serves them all (no timer per reconcile).
        self._tasks: dict[ReconcileContext, tuple[asyncio.Task[None], WorkQueue]] = {}
        self._deadline_alarm = Alarm(self._deadlines_passed)
        self._deadline_alarm_at = math.inf  # when it rings; infinity: not set
        self._base_context = contextvars.copy_context()  # set again by start()
        # The loop it runs on and its clock, set by start(): looking the running
        # loop up costs a system call (getpid) in Python 3.11, three per reconcile.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock = time.monotonic
        self._free = 0  # reconciles that may start now (none before start())
        # Worker tasks that hold a place and will take a key at their next step.
        self._starting = 0
        self._idle_name = f"reconcile {controller.name}"  # a worker's name until it takes a key
        self._primaries: Store | None = None  # the primary informer's cache, once bound
        self._logger = logging.getLogger(f"wukong.controller.{controller.name}")

    def _new_queue(self, observer: RuntimeObserver) -> WorkQueue:
        options = self.config.options
        return WorkQueue(
            name=self.config.name,
            rate_limiter=options.rate_limiter,
            observer=observer,
            tenant_of=_namespace_of if options.fair_namespaces else None,
            max_per_tenant=options.max_concurrent_reconciles_per_namespace,
            on_ready=self._dispatch,
        )

    # -- ControllerView -----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def kind(self) -> str:
        return self.config.primary.kind

    @property
    def max_concurrent_reconciles(self) -> int:
        return self.config.options.max_concurrent_reconciles

    @property
    def active_workers(self) -> int:
        return len(self._in_flight)

    def queue_depth(self) -> int:
        return len(self.queue)

    def processing_seconds(self) -> list[float]:
        return self.queue.processing_seconds()

    def in_flight(self) -> list[ReconcileContext]:
        return list(self._in_flight.values())

    # -- wiring -------------------------------------------------------------------------

    def bind(self, *, informer_for: Callable[[Resource], Informer]) -> None:
        """Connect event handlers to the manager's shared informers."""
        primary = self.config.primary
        self._primaries = informer_for(primary).store
        informer_for(primary).add_handler(
            self._handler(primary, _PRIMARY, _requests_of_primary, primary=True)
        )
        for owned in self.config.owns:
            informer_for(owned).add_handler(self._handler(owned, _OWNER, self._owners_of))
        for watch in self.config.watches:
            informer_for(watch.resource).add_handler(
                self._handler(watch.resource, f"map:{_name_of(watch.map_func)}", watch.map_func)
            )

    def enqueue(self, request: Request, *, source: str = "code") -> None:
        """Reconcile `request` (again) because code asked: a webhook, a command, a test.
        `source` names who, in the reconcile's trigger."""
        self.queue.add(request, trigger=Trigger(TriggerKind.MANUAL, source=source))

    def _handler(
        self, resource: Resource, mapping: str, requests_of: MapFunc, *, primary: bool = False
    ) -> EventHandler:
        """Enqueue what `requests_of` returns for every version an event shows, each
        with a trigger naming the event, the object and `mapping`."""
        kind = resource.kind

        def enqueue(
            obj: Object, requests: list[Request], trigger: TriggerKind, event: str | None
        ) -> None:
            if not requests:
                return
            metadata = obj["metadata"]
            why = Trigger(
                trigger,
                event=event,
                object_kind=kind,
                namespace=metadata.get("namespace"),
                name=metadata.get("name"),
                resource_version=metadata.get("resourceVersion"),
                mapping=mapping,
            )
            add = self.queue.add
            for request in requests:
                add(request, trigger=why)

        def on_add(obj: Object) -> None:
            enqueue(obj, list(requests_of(obj)), TriggerKind.EVENT, "ADDED")

        def on_update(old: Object, new: Object) -> None:
            requests = list(requests_of(new))
            if not primary:
                # The old version too: a changed owner or reference must reach both sides.
                requests.extend(r for r in requests_of(old) if r not in requests)
            enqueue(new, requests, TriggerKind.EVENT, "MODIFIED")

        def on_delete(obj: Object) -> None:
            requests = list(requests_of(obj))
            if primary:
                ctx = self._in_flight.get(requests[0])
                if ctx is not None:
                    self._cancel(ctx, CancelReason.DELETED)
            enqueue(obj, requests, TriggerKind.EVENT, "DELETED")

        def on_resync(obj: Object) -> None:
            enqueue(obj, list(requests_of(obj)), TriggerKind.SYNC_PERIOD, None)

        return EventHandler(
            on_add=on_add, on_update=on_update, on_delete=on_delete, on_resync=on_resync
        )

    def _owners_of(self, obj: Object) -> list[Request]:
        primary = self.config.primary
        return [
            Request(obj["metadata"].get("namespace", ""), ref["name"])
            for ref in obj["metadata"].get("ownerReferences") or []
            if ref.get("controller")
            and ref.get("kind") == primary.kind
            and ref.get("apiVersion", "").rpartition("/")[0] == primary.group
        ]

    # -- running ---------------------------------------------------------------------

    def start(self) -> None:
        """Start reconciling (the manager does this once caches are synced).

        After a `stop` (leadership lost, then won back) it starts over with a
        fresh queue holding every cached primary object, as a new leader would.
        """
        if self.queue.shutting_down:
            assert self._primaries is not None, "bound before it runs"
            self.queue = self._new_queue(self._observer)
            # As a new leader's informer would: every cached primary, as an add.
            replay = self._handler(self.config.primary, _PRIMARY, _requests_of_primary)
            assert replay.on_add is not None
            for obj in self._primaries.list_objects():
                replay.on_add(obj)
        self._base_context = contextvars.copy_context()
        self._loop = asyncio.get_running_loop()
        self._clock = loop_clock(self._loop)
        self._free = self.max_concurrent_reconciles
        self._starting = 0  # those of an earlier term see their queue is not this one
        self._dispatch()

    async def stop(self, *, reason: CancelReason, grace: float) -> None:
        """Stop taking work, cancel reconciles in flight with `reason`, wait up to `grace`."""
        self.queue.shut_down()
        self._free = 0
        for ctx in list(self._in_flight.values()):
            self._cancel(ctx, reason)
        if self._tasks:
            tasks = {task for task, _ in self._tasks.values()}
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                # Its key stays reserved in the old queue until it really ends.
                log.warning(
                    "controller %s: %s did not stop within %.1fs", self.name, task.get_name(), grace
                )
        # Every reconcile left is cancelled already: its deadline has nothing to do.
        self._deadline_alarm.close()
        self._deadline_alarm_at = math.inf

    def _dispatch(self) -> None:
        """Start worker tasks for waiting keys while fewer than the maximum run.

        Called when a reconcile ends without its task going on and, by the queue
        (`on_ready`), whenever a key may be taken: a task per key that no worker
        about to take one will take. A worker takes its key at its first step,
        so that keys that come meanwhile go to one task, not one each.
        """
        queue = self.queue
        while self._free > 0 and len(queue) > self._starting and not queue.shutting_down:
            self._free -= 1
            self._starting += 1
            loop = self._loop
            assert loop is not None, "started"
            coro = self._work(queue)
            context = self._base_context.copy()
            if loop.get_task_factory() is None:  # what create_task would do, minus its wrappers
                asyncio.Task(coro, loop=loop, name=self._idle_name, context=context)
            else:
                loop.create_task(coro, name=self._idle_name, context=context)

    async def _work(self, queue: WorkQueue) -> None:
        """A worker task: takes a key, reconciles it, ends it, and goes on with the
        next waiting key in the same step, while keys wait and it may go on.

        A key taken when a reconcile ends costs no task, no turn of the loop and
        no done callback. The task goes on only as it was: its contextvars as
        the reconcile found them (one that set its own ends with its task; those
        its observers set are taken back), never cancelled (a cancelled reconcile
        ends its task: Python 3.11's `Task.uncancel` cannot take back a cancel sent
        while the task runs), the queue current, within its turn (`_TURN`
        seconds of reconciles: then it ends, holding no key, and the loop runs
        other callbacks before the worker `_dispatch` starts takes the next).
        """
        if queue is not self.queue:
            return  # stopped, and started again with a fresh queue, before its first step
        self._starting -= 1
        task = asyncio.current_task(self._loop)
        assert task is not None
        clock = self._clock
        turn_began = clock()
        reconcile = self.config.reconciler.reconcile
        taken = self._take(queue, task, None)
        if taken is None:
            return
        ctx = taken
        while True:
            clean = contextvars.copy_context()  # shares the values: compared in constant time
            returned: object = None
            raised: BaseException | None = None
            try:
                returned = await reconcile(ctx, ctx.request)
            except (Exception, asyncio.CancelledError) as error:
                raised = error
            except BaseException as error:  # SystemExit, KeyboardInterrupt: ended, then on
                try:
                    self._reconciled(queue, ctx, None, error)
                finally:
                    ctx._release()
                raise
            as_found = contextvars.copy_context() == clean
            try:
                kept = self._reconciled(queue, ctx, returned, raised, keep_place=as_found)
            finally:
                ctx._release()  # from here on, cancelling it does nothing
            if not kept:
                return
            if ctx._cancel_sent or task.cancelling() or ctx.started - turn_began >= _TURN:
                # Cancelled (up to its very end): the task ends with it, so that a
                # cancellation it has not seen yet cannot reach the next reconcile.
                # Or its turn is over: the loop runs other callbacks before a new
                # worker takes the next key (no key is held meanwhile: one due
                # meanwhile goes to whichever worker looks first).
                self._free += 1
                self._dispatch()
                return
            taken = self._take(queue, task, ctx)
            if taken is None:
                return
            ctx = taken

    def _take(
        self, queue: WorkQueue, task: "asyncio.Task[None]", previous: ReconcileContext | None
    ) -> ReconcileContext | None:
        """Start the next waiting key's reconcile in `task`, which holds a place; None
        if no key waits (the place is freed).

        `previous`: the reconcile the task ran last, which left its contextvars
        as it found them (its span is this one's, unless an observer sets one)."""
        ticket = None
        if not queue.shutting_down:
            # Delayed keys that came due join the queue as it is taken from: this
            # task takes one of them, so that one needs no task of its own.
            self._starting += 1
            try:
                ticket = queue.try_get()
            finally:
                self._starting -= 1
        if ticket is None:
            self._free += 1  # nothing waits: nothing to dispatch either
            return None
        request = ticket.key
        assert isinstance(request, Request)
        ctx = ReconcileContext(
            controller=self.config.name,
            request=request,
            timeout=self.reconcile_timeout,
            client=self._client,
            logger=self._logger,
            due_at=ticket.due_at,
            triggers=ticket.triggers,  # type: ignore[arg-type]  # the controller's are Triggers
            trigger_count=ticket.trigger_count,
            call_share=self.config.options.call_budget_share,
            clock=self._clock,
        )
        report = self._reporter()
        if report is not None:
            # In the task that runs it: observers may make values current for it.
            report(event_of((Step.STARTED, ctx, *_NOT_FINISHED, *_NOT_REQUEUED)))
        ctx._enter()
        ctx._attach(task, previous=previous)
        task.set_name(f"reconcile {self.config.name} {request}")  # for the loop's watchdog
        self._in_flight[request] = ctx
        self._tasks[ctx] = (task, queue)
        # The deadline is an alarm, not a wait_for around the reconcile: it
        # keeps running in its task so that a reconcile that ignores
        # cancellation can be seen (STUCK) rather than abandoned.
        if ctx.deadline < self._deadline_alarm_at:  # only when nothing earlier is due
            self._set_deadline_alarm(ctx.deadline)
        self._scopes.enter(ctx, self._cancel)
        if self._logger.isEnabledFor(logging.DEBUG):
            ctx.logger.debug("reconcile started (deadline in %.1fs)", ctx.timeout)
        return ctx

    def _reconciled(
        self,
        queue: WorkQueue,
        ctx: ReconcileContext,
        result: object,
        error: BaseException | None,
        *,
        keep_place: bool = False,
    ) -> bool:
        """The reconcile ended: report, requeue, free its key and its place.

        With `keep_place` its task keeps the place to take the next key itself
        (if the queue is still the current one, and ending went well): True if so."""
        # Its deadline goes with it: the alarm, if set for it, finds the next one.
        del self._tasks[ctx]
        if self._in_flight.get(ctx.request) is ctx:
            del self._in_flight[ctx.request]
        self._scopes.leave(ctx)
        # A reconcile of an earlier term (stopped, then started again with
        # a fresh queue) frees its key in its own queue, and no place.
        current = queue is self.queue
        kept = keep_place and current and not queue.shutting_down
        try:
            self._finish(ctx, result, error)
        except BaseException:
            kept = False
            raise
        finally:
            if current and not kept:
                self._free += 1
            if kept:
                # About to take a key itself: one queued again by `done` needs no new task.
                self._starting += 1
                queue.done(ctx.request)
                self._starting -= 1
            else:
                queue.done(ctx.request)
                if current:
                    self._dispatch()
        return kept

    def _reporter(self) -> Callable[[LifecycleEvent], None] | None:
        """Where a lifecycle event goes now; None when nobody would act on it, so that
        none is built (the node agent's always-on probe points, while not traced)."""
        gate = self._report_gate
        if gate is not None and not gate():
            return None
        return self._report

    def _set_deadline_alarm(self, when: float) -> None:
        self._deadline_alarm_at = when
        self._deadline_alarm.set(when)

    def _deadlines_passed(self) -> None:
        """The deadline alarm rang: cancel every reconcile past its deadline (the first
        ones in `_tasks`), then set the alarm for the next deadline, if any."""
        self._deadline_alarm_at = math.inf
        now = self._clock()
        passed = []
        for ctx in self._tasks:
            if ctx.deadline > now:
                self._set_deadline_alarm(ctx.deadline)
                break
            if ctx.cancel_reason is None:  # a cancelled one may still be unwinding
                passed.append(ctx)
        for ctx in passed:
            self._cancel(ctx, CancelReason.DEADLINE_EXCEEDED)

    def _cancel(self, ctx: ReconcileContext, reason: CancelReason) -> None:
        if not ctx.cancel(reason):
            return
        report = self._reporter()
        if report is not None:
            report(LifecycleEvent(step=Step.CANCEL_REQUESTED, context=ctx, reason=reason))
        loop = asyncio.get_running_loop()
        loop.call_later(self.config.options.cancel_grace, self._report_if_stuck, ctx)

    def _report_if_stuck(self, ctx: ReconcileContext) -> None:
        if self._in_flight.get(ctx.request) is not ctx:
            return
        ctx.logger.warning(
            "reconcile did not stop %.1fs after it was cancelled (%s): blocking code, or "
            "CancelledError swallowed? The key stays reserved until it ends",
            self.config.options.cancel_grace,
            ctx.cancel_reason,
        )
        report = self._reporter()
        if report is not None:
            report(LifecycleEvent(step=Step.STUCK, context=ctx, reason=ctx.cancel_reason))

    def _finish(
        self, ctx: ReconcileContext, returned: object, raised: BaseException | None
    ) -> None:
        now = self._clock()  # one read for both
        outcome, result, error = _outcome_of(
            ctx, returned, raised, deadline_passed=ctx.deadline <= now
        )
        reason = ctx.cancel_reason if outcome is Outcome.CANCELLED else None
        duration = now - ctx.started
        if outcome is Outcome.CANCELLED:
            # Normal in a controller's life: DEBUG, with the reason, then requeue.
            in_flight = ctx.cut_call or "none"
            # What ended the call, when it says more than the reason (a 429 whose
            # Retry-After is past the deadline, a write refused after the loss).
            cause = f", cause: {error}" if error is not None else ""
            ctx.logger.debug(
                "reconcile cancelled after %.3fs: reason=%s, API call in flight: %s%s",
                duration,
                reason,
                in_flight,
                cause,
                extra={"cancel_reason": str(reason), "api_call_in_flight": in_flight},
            )
        elif outcome is Outcome.ERROR:
            terminal = " (terminal: not requeued)" if isinstance(error, TerminalError) else ""
            ctx.logger.error(
                "reconcile failed after %.3fs%s: %s", duration, terminal, error, exc_info=error
            )
        elif self._logger.isEnabledFor(logging.DEBUG):
            ctx.logger.debug("reconcile finished after %.3fs: %s", duration, outcome)
        report = self._reporter()
        if report is not None:
            panicked = outcome is Outcome.ERROR and is_panic(error)
            finished = (outcome, result, error, reason, duration, panicked)
            report(event_of((Step.FINISHED, ctx, *finished, *_NOT_REQUEUED)))
        # As controller-runtime: a terminal error is not retried (nor forgotten).
        if outcome is not Outcome.ERROR or not isinstance(error, TerminalError):
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
            self.queue.add_after(
                request, delay, trigger=Trigger(TriggerKind.REQUEUE_AFTER, ctx.as_link())
            )
        else:
            # A cancellation says nothing about the object: its backoff is capped
            # low (ControllerOptions.cancelled_backoff_cap), unlike an error's.
            cancelled = outcome is Outcome.CANCELLED
            delay = self.queue.add_rate_limited(
                request,
                trigger=Trigger(_BACKOFF_TRIGGER[outcome], ctx.as_link()),
                max_delay=self.config.options.cancelled_backoff_cap if cancelled else None,
            )
            if self._logger.isEnabledFor(logging.DEBUG):
                ctx.logger.debug("requeued with backoff: again in %.3fs", delay)
        report = self._reporter()
        if report is not None:
            report(
                LifecycleEvent(
                    step=Step.REQUEUED,
                    context=ctx,
                    requeue_after=delay,
                    rate_limited=outcome is not Outcome.REQUEUE_AFTER,
                )
            )


# The empty fields of the others' steps, in LifecycleEvent's order.
_NOT_FINISHED = (None, None, None, None, None, False)  # outcome ... panicked
_NOT_REQUEUED = (None, False)  # requeue_after, rate_limited
# How long a worker task runs reconciles back to back (keys that waited for it)
# before it ends so that the loop runs other callbacks.
_TURN = 0.001
# What a rate-limited requeue is, by how the reconcile that asked for it ended.
_BACKOFF_TRIGGER = {
    Outcome.REQUEUE: TriggerKind.REQUEUE,
    Outcome.ERROR: TriggerKind.ERROR_BACKOFF,
    Outcome.CANCELLED: TriggerKind.CANCELLED_BACKOFF,
}
# How an event's object maps to a key (Trigger.mapping).
_PRIMARY = "primary"
_OWNER = "owner"


def _outcome_of(
    ctx: ReconcileContext, returned: object, raised: BaseException | None, *, deadline_passed: bool
) -> tuple[Outcome, Result | None, BaseException | None]:
    """How the reconcile ended; records the cancel reason on `ctx` if it was cancelled."""
    if raised is not None:
        reason = decide_cancel_reason(
            raised, recorded=ctx.cancel_reason, deadline_passed=deadline_passed
        )
        if reason is not None:
            ctx._record_reason(reason)
            return (
                Outcome.CANCELLED,
                None,
                None if isinstance(raised, asyncio.CancelledError) else raised,
            )
        return Outcome.ERROR, None, raised
    if not isinstance(returned, Result):
        return Outcome.ERROR, None, TypeError(f"reconcile returned {returned!r}, not a Result")
    if returned.requeue_after > 0:
        return Outcome.REQUEUE_AFTER, returned, None
    if returned.requeue:
        return Outcome.REQUEUE, returned, None
    return Outcome.SUCCESS, returned, None


def _namespace_of(key: object) -> str:
    assert isinstance(key, Request)
    return key.namespace


def _request_of(obj: Object) -> Request:
    metadata = obj["metadata"]
    return Request(metadata.get("namespace") or "", metadata["name"])


def _requests_of_primary(obj: Object) -> list[Request]:
    return [_request_of(obj)]


def _name_of(map_func: MapFunc) -> str:
    """A map function's name for triggers ("Reconciler.disks_of"); a partial's function's."""
    function = getattr(map_func, "func", map_func)
    return str(getattr(function, "__qualname__", None) or type(function).__name__)
