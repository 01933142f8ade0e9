"""Runtime observers that turn reconcile, queue, API and leadership events into metrics.

`RuntimeMetrics` plugs into the runtime's four seams, each an observer the
runtime already calls synchronously on the event loop:

- reconcile lifecycle events (`lifecycle`): reconcile counts by result,
  durations with trace-id exemplars, timeouts, cancellations by reason, the
  share of the deadline used and, at start, how late a requeue ran;
- the work queue (`on_add`/`on_get`/`on_done`/`on_retry`, the `QueueObserver`
  protocol): adds, retries, queue and work durations. Depth and work in
  progress are read at scrape time from the tracked controllers instead;
- API calls (`api_call`): client-go's request count and latency, plus the
  calls that were cancelled or timed out, by reason;
- leader election (`leader(name=...)`): `leader_election_master_status`.

Wiring. `instrument(manager)` does all of it for a manager whose controllers
are already added, and must run before `manager.run()` (a reconcile's client
copies the manager client's observers when it starts). Equivalently, by hand:

    metrics = RuntimeMetrics(metrics=create_metrics(), host="10.0.0.1:6443")
    client.add_observer(metrics.api_call)
    manager = Manager(client=client, lifecycle_observers=[metrics.lifecycle],
                      queue_observer=metrics)
    manager.add(controller)
    metrics.track(controller)

Attributing a cancelled API call. When a reconcile is cancelled the runtime
records the reason on its context *before* cancelling the task, and the client
reports the aborted call from inside that task. At STARTED, `lifecycle` puts
the context into a context variable of the reconcile task (`ctx.task_context`,
which observers may prepare before the task is created), so `api_call` can
read the reason the reconcile was cancelled for. A call cancelled outside any
reconcile, or before a reason was recorded, counts as `parent_cancelled`.

Observers must be quick and must not raise; everything here is a few dict
lookups and additions.
"""

import asyncio
import contextvars
from collections.abc import Callable
from typing import Any

from opentelemetry import trace

from wukong.metrics.definitions import OperatorMetrics, create_metrics
from wukong.runtime.client import ApiCall
from wukong.runtime.context import CancelReason, ReconcileContext
from wukong.runtime.controller import Controller
from wukong.runtime.errors import ApiTimeout
from wukong.runtime.lifecycle import LifecycleEvent, Outcome, Step
from wukong.runtime.manager import Manager

# The reconcile a task belongs to, set in its task context at STARTED.
_current_reconcile: contextvars.ContextVar[ReconcileContext | None] = contextvars.ContextVar(
    "wukong_metrics_current_reconcile", default=None
)

# controller-runtime counts a reconcile that ended with a context error as
# result="error" (and as an error): cancellation is not a fourth kind of result.
_RESULT_LABEL = {
    Outcome.SUCCESS: "success",
    Outcome.ERROR: "error",
    Outcome.REQUEUE: "requeue",
    Outcome.REQUEUE_AFTER: "requeue_after",
    Outcome.CANCELLED: "error",
}
_NO_STATUS = "<error>"  # client-go's code label when no answer arrived


class RuntimeMetrics:
    """Observers for the runtime's hooks, recording into one `OperatorMetrics`."""

    def __init__(self, *, metrics: OperatorMetrics, host: str) -> None:
        self.metrics = metrics
        self.host = host

    # -- controllers ---------------------------------------------------------------

    def track(self, controller: Controller) -> None:
        """Export `controller`'s queue depth, work in progress and worker gauges."""
        self.metrics.controllers.track(controller)

    # -- reconcile lifecycle ---------------------------------------------------------

    def lifecycle(self, event: LifecycleEvent) -> None:
        if event.step is Step.STARTED:
            self._started(event)
        elif event.step is Step.FINISHED:
            self._finished(event)

    def _started(self, event: LifecycleEvent) -> None:
        ctx = event.context
        if ctx is None:
            return
        ctx.task_context.run(_current_reconcile.set, ctx)
        if ctx.due_at is not None:
            # Both are the event loop's monotonic clock.
            lateness = max(0.0, ctx.started - ctx.due_at)
            self.metrics.requeue_delay.labels(event.controller).observe(lateness)

    def _finished(self, event: LifecycleEvent) -> None:
        m = self.metrics
        controller = event.controller
        outcome = event.outcome or Outcome.ERROR
        m.reconcile_total.labels(controller, _RESULT_LABEL[outcome]).inc()
        if outcome in (Outcome.ERROR, Outcome.CANCELLED):
            m.reconcile_errors.labels(controller).inc()
        if outcome is Outcome.CANCELLED:
            reason = event.reason or CancelReason.PARENT_CANCELLED
            m.reconcile_cancellations.labels(controller, reason.value).inc()
            if reason is CancelReason.DEADLINE_EXCEEDED:
                m.reconcile_timeouts.labels(controller).inc()
        ctx = event.context
        if event.duration is None:
            return
        span = ctx.span if ctx is not None else None
        m.reconcile_time.labels(controller).observe(event.duration, _exemplar(span))
        if ctx is not None and ctx.timeout > 0:
            m.reconcile_budget_used.labels(controller).observe(event.duration / ctx.timeout)

    # -- work queue (QueueObserver) ------------------------------------------------

    def on_add(self, queue: str) -> None:
        self.metrics.workqueue_adds.labels(queue, queue).inc()

    def on_get(self, queue: str, waited: float) -> None:
        self.metrics.workqueue_queue_duration.labels(queue, queue).observe(waited)

    def on_done(self, queue: str, worked: float) -> None:
        self.metrics.workqueue_work_duration.labels(queue, queue).observe(worked)

    def on_retry(self, queue: str) -> None:
        self.metrics.workqueue_retries.labels(queue, queue).inc()

    # -- API calls -----------------------------------------------------------------

    def api_call(self, call: ApiCall) -> None:
        m = self.metrics
        code = str(call.status_code) if call.status_code is not None else _NO_STATUS
        m.rest_client_requests.labels(code, call.method, self.host).inc()
        m.rest_client_request_duration.labels(call.verb, self.host).observe(
            call.duration, _exemplar(trace.get_current_span())
        )
        reason = _cancel_reason(call.error)
        if reason is not None:
            m.api_request_cancellations.labels(call.verb, call.resource, reason.value).inc()

    # -- leader election -------------------------------------------------------------

    def leader(self, *, name: str) -> Callable[[bool], None]:
        """A `LeaderElector` observer for the Lease `name`; starts at 0 (not leading)."""
        gauge = self.metrics.leader_election_master_status.labels(name)
        gauge.set(0)

        def observe(leading: bool) -> None:
            gauge.set(1 if leading else 0)

        return observe


def instrument(
    manager: Manager, *, metrics: OperatorMetrics | None = None, host: str | None = None
) -> RuntimeMetrics:
    """Attach metrics to `manager`, its controllers, client and elector; before `run()`.

    Controllers added after this call are not instrumented. `host` is the API
    server's host:port for the `rest_client_*` labels (default: the client's).
    """
    observers = RuntimeMetrics(
        metrics=metrics if metrics is not None else create_metrics(),
        host=host if host is not None else manager.client.host,
    )
    for controller in manager.controllers:
        controller.lifecycle.subscribe(observers.lifecycle)
        controller.queue.observer = observers
        observers.track(controller)
    manager.client.add_observer(observers.api_call)
    if manager.elector is not None:
        manager.elector.add_observer(observers.leader(name=manager.elector.config.name))
    return observers


def _cancel_reason(error: BaseException | None) -> CancelReason | None:
    if isinstance(error, ApiTimeout):
        return CancelReason.API_TIMEOUT
    if isinstance(error, asyncio.CancelledError):
        ctx = _current_reconcile.get()
        if ctx is not None and ctx.cancel_reason is not None:
            return ctx.cancel_reason
        return CancelReason.PARENT_CANCELLED
    return None


def _exemplar(span: Any) -> dict[str, str] | None:
    """`{"trace_id": ...}` for a valid (sampled or not) span, else None."""
    get_span_context = getattr(span, "get_span_context", None)
    if get_span_context is None:
        return None
    span_context = get_span_context()
    if not span_context.is_valid:
        return None
    return {"trace_id": f"{span_context.trace_id:032x}"}
