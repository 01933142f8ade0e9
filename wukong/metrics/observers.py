"""The metrics observer: runtime events become controller-runtime's metrics and ours.

`RuntimeMetrics` is a `RuntimeObserver`; register it with the manager:

    metrics = RuntimeMetrics()                   # a fresh registry (create_metrics())
    manager = Manager(client=client, observers=[metrics])
    server = MetricsServer(registry=metrics.metrics.registry)

What each event feeds:

- `controller_added`: the controller's queue depth, work in progress and
  worker gauges, read at scrape time (see `definitions.ControllerStateCollector`);
- `reconcile`: at FINISHED, counts by result (and by namespace, for the top
  namespaces only), errors (terminal ones and panics apart too), timeouts,
  cancellations by reason (and by namespace, for the top namespaces only), the triggers that
  queued the reconcile by kind (`ctx.triggers`; the adds the queue counted
  past the ones it kept count under the last kept one's kind), and three
  histograms with the reconcile's trace id as exemplar (`HistogramSeries.observe`):
  duration, share of the deadline used, and how late a requeue started;
- `queue_metrics`: client-go's adds, queue and work durations, series the
  queue records into itself (client-go's MetricsProvider); `queue_retried`:
  its retries;
- `api_call`: client-go's request count and latency (exemplar: the calling
  reconcile's trace), plus calls that ended early, by the reason the runtime
  decided (`ApiCall.cancel_reason`);
- `watch_restarted`, `relisted`: `wukong_watch_restarts_total` and
  `wukong_informer_relists_total` by resource and cause;
- `leadership_changed`: `leader_election_master_status`; `standing_by`:
  `wukong_leader_standbys_total`;
- `shards_changed`, `shard_filtering`: `wukong_shards_held`,
  `wukong_shard_handoffs_total` by reason, `wukong_shard_client_filtering_total`;
  `space_conflict`: `wukong_shard_space_conflict`;
- `webhook_added`: the webhook's requests (codes 200 and 500) and in-flight
  series at 0, as controller-runtime's `InstrumentedHook` makes them;
- `admission_started`, `admission_reviewed`: controller-runtime's webhook
  families (requests by code, latency, in flight, panics) and our decisions by
  reason;
- `observer_failed`: `wukong_observer_failures_total`.

Everything here is a few dict lookups and additions: observers run on the
reconcile's hot path. That is why the families fed on every reconcile are
plain numbers read at scrape time (`metrics/plain.py`): prometheus_client
validates and locks on every `.labels()`, `inc` and `observe`, most of this
observer's cost per reconcile before (bench/RESULTS.md). For the same reason a
histogram gets an exemplar only when its bucket's is stale (`HistogramSeries.observe`).
"""

import time
from typing import NamedTuple

from wukong.metrics.definitions import OperatorMetrics, create_metrics
from wukong.metrics.plain import CounterSeries, HistogramSeries
from wukong.runtime import CancelReason, RuntimeObserver, TerminalError
from wukong.runtime.observe import (
    ApiCall,
    ControllerView,
    LifecycleEvent,
    Outcome,
    Step,
    TriggerKind,
    WebhookReview,
    is_failure,
)

# controller-runtime's result labels. A cancelled reconcile is one of them too,
# by what it means (see _result_of): no fifth value breaks existing dashboards.
_RESULT_LABEL = {
    Outcome.SUCCESS: "success",
    Outcome.ERROR: "error",
    Outcome.REQUEUE: "requeue",
    Outcome.REQUEUE_AFTER: "requeue_after",
}
_NO_STATUS = "<error>"  # client-go's code label when no answer arrived


class _ControllerSeries:
    """The series one controller's reconciles feed as each ends, found by its name once
    per reconcile; each made on first use, as `.labels()` would make it."""

    __slots__ = ("_controller", "_metrics", "budget_used", "reconcile_time", "results", "triggers")

    def __init__(self, metrics: OperatorMetrics, controller: str) -> None:
        self._metrics = metrics
        self._controller = controller
        self.results: dict[str, CounterSeries] = {}
        self.triggers: dict[str, CounterSeries] = {}
        # Every reconcile that ends observes both.
        self.reconcile_time = metrics.reconcile_time.labels(controller)
        self.budget_used = metrics.reconcile_budget_used.labels(controller)

    def result(self, result: str) -> CounterSeries:
        series = self.results.get(result)
        if series is None:
            series = self.results[result] = self._metrics.reconcile_total.labels(
                self._controller, result
            )
        return series

    def trigger(self, kind: str) -> CounterSeries:
        series = self.triggers.get(kind)
        if series is None:
            series = self.triggers[kind] = self._metrics.reconcile_triggers.labels(
                self._controller, kind
            )
        return series


class _QueueSeries(NamedTuple):
    """client-go's series of one work queue, made together (as `controller_added` makes
    them: a queue is named after its controller)."""

    adds: CounterSeries
    waited: HistogramSeries
    worked: HistogramSeries

    @classmethod
    def of(cls, metrics: OperatorMetrics, queue: str) -> "_QueueSeries":
        return cls(
            metrics.workqueue_adds.labels(queue, queue),
            metrics.workqueue_queue_duration.labels(queue, queue),
            metrics.workqueue_work_duration.labels(queue, queue),
        )


class RuntimeMetrics(RuntimeObserver):
    """Records the runtime's events into one `OperatorMetrics`."""

    name = "metrics"

    def __init__(self, *, metrics: OperatorMetrics | None = None) -> None:
        self.metrics = metrics if metrics is not None else create_metrics()
        # The families every reconcile feeds are plain ones (metrics/plain.py).
        self._controllers: dict[str, _ControllerSeries] = {}
        self._queues: dict[str, _QueueSeries] = {}
        # (status code, method, host) -> the request count's and latency's series
        self._calls: dict[tuple[int | None, str, str], tuple[CounterSeries, HistogramSeries]] = {}

    def controller_added(self, controller: ControllerView) -> None:
        m = self.metrics
        m.controllers.track(controller)
        # Series exist from the start at 0, as controller-runtime's initMetrics
        # makes them: rate() and error-ratio panels work before the first error.
        name = controller.name
        for result in _RESULT_LABEL.values():
            m.reconcile_total.labels(name, result)
        for family in (m.reconcile_errors, m.terminal_reconcile_errors, m.reconcile_panics):
            family.labels(name)
        m.reconcile_timeouts.labels(name)
        # Every cancel reason too: a storm's first cancellations show in rate() at
        # once, not one scrape after their series appeared.
        for reason in CancelReason:
            m.reconcile_cancellations.labels(name, reason.value)
        # And every trigger kind, for the same reason.
        for trigger in TriggerKind:
            m.reconcile_triggers.labels(name, trigger.value)
        # client-go's queue metrics exist as soon as the queue does.
        self._queues[name] = _QueueSeries.of(m, name)
        m.workqueue_retries.labels(name, name)

    # -- reconcile lifecycle ---------------------------------------------------------

    def reconcile(self, event: LifecycleEvent) -> None:
        if event.step is Step.FINISHED:
            self._finished(event)

    def _series(self, controller: str) -> _ControllerSeries:
        series = self._controllers.get(controller)
        if series is None:
            series = self._controllers[controller] = _ControllerSeries(self.metrics, controller)
        return series

    def _finished(self, event: LifecycleEvent) -> None:
        m = self.metrics
        ctx = event.context
        controller = ctx.controller
        outcome = event.outcome
        assert outcome is not None  # FINISHED always carries one
        series = self._controllers.get(controller) or self._series(controller)
        result = _RESULT_LABEL.get(outcome) or _result_of(outcome, event.reason)
        # The counters of every reconcile: found in the controller's own dicts and
        # added to directly (`inc(1)` is the same, a call more each).
        (series.results.get(result) or series.result(result)).value += 1.0
        # One clock read for the namespaces' ranking and the exemplars below.
        now = time.monotonic()
        m.namespace_reconciles.record(controller, ctx.request.namespace, now)
        triggers = ctx.triggers
        for trigger in triggers:
            # a StrEnum: the same key as its value
            (series.triggers.get(trigger.kind) or series.trigger(trigger.kind)).value += 1.0
        if triggers and ctx.trigger_count > len(triggers):
            # Coalesced past the queue's bound: a burst, of the kind it ended with.
            series.trigger(triggers[-1].kind).inc(ctx.trigger_count - len(triggers))
        if result == "error":
            m.reconcile_errors.labels(controller).inc()
            # Both are errors too, as in controller-runtime.
            if isinstance(event.error, TerminalError):
                m.terminal_reconcile_errors.labels(controller).inc()
            if event.panicked:
                m.reconcile_panics.labels(controller).inc()
        if outcome is Outcome.CANCELLED:
            assert event.reason is not None  # the runtime decides one for every cancellation
            m.reconcile_cancellations.labels(controller, event.reason.value).inc()
            m.namespace_cancellations.record(controller, ctx.request.namespace, now)
            # Like controller-runtime, only the reconcile's own deadline is a timeout.
            if event.reason is CancelReason.DEADLINE_EXCEEDED:
                m.reconcile_timeouts.labels(controller).inc()
        # Observed at the end, when the span exists: each histogram's exemplar
        # leads to the reconcile's trace.
        span = ctx.span
        if ctx.due_at is not None:
            # How late this requeue started (both on the event loop's clock).
            lateness = max(0.0, ctx.started - ctx.due_at)
            m.requeue_delay.labels(controller).observe(lateness, span, now)
        duration = event.duration
        assert duration is not None  # FINISHED always carries one
        series.reconcile_time.observe(duration, span, now)
        series.budget_used.observe(duration / ctx.timeout, span, now)

    # -- work queue ------------------------------------------------------------------

    def _queue(self, queue: str) -> _QueueSeries:
        series = self._queues.get(queue)
        if series is None:
            series = self._queues[queue] = _QueueSeries.of(self.metrics, queue)
        return series

    def queue_metrics(self, queue: str) -> _QueueSeries:
        # The queue records its adds, waits and work times into these itself.
        return self._queue(queue)

    def queue_retried(self, queue: str) -> None:
        self.metrics.workqueue_retries.labels(queue, queue).inc()

    # -- API calls -------------------------------------------------------------------

    def api_call(self, call: ApiCall) -> None:
        key = (call.status_code, call.method, call.host)
        series = self._calls.get(key)
        if series is None:
            code = str(call.status_code) if call.status_code is not None else _NO_STATUS
            series = self._calls[key] = (
                self.metrics.rest_client_requests.labels(code, call.method, call.host),
                # client-go's `verb` label is the HTTP method (GET, PUT, ...).
                self.metrics.rest_client_request_duration.labels(call.method, call.host),
            )
        requests, latency = series
        requests.value += 1.0  # inc(1), a call less
        span = call.reconcile.span if call.reconcile is not None else None
        latency.observe(call.duration, span, time.monotonic())
        if call.cancel_reason is not None:
            self.metrics.api_request_cancellations.labels(
                call.verb, call.resource, call.cancel_reason.value
            ).inc()

    # -- leader election, observers ----------------------------------------------------

    def leadership_changed(self, lease: str, leading: bool) -> None:
        self.metrics.leader_election_master_status.labels(lease).set(1 if leading else 0)

    def watch_restarted(self, resource: str, cause: str) -> None:
        self.metrics.watch_restarts.labels(resource, cause).inc()

    def relisted(self, resource: str, cause: str) -> None:
        self.metrics.relists.labels(resource, cause).inc()

    def standing_by(self, lease: str) -> None:
        self.metrics.leader_standbys.labels(lease).inc()

    def shards_changed(self, held: frozenset[int], moved: int, reason: str) -> None:
        self.metrics.shards_held.set(len(held))
        self.metrics.shard_handoffs.labels(reason).inc(moved)

    def space_conflict(self, conflict: bool) -> None:
        self.metrics.shard_space_conflict.set(1 if conflict else 0)

    def shard_filtering(self, resource: str, where: str) -> None:
        if where == "client":
            self.metrics.shard_client_filtering.labels(resource).inc()

    # -- admission webhooks ------------------------------------------------------------

    def webhook_added(self, webhook: str) -> None:
        # The codes controller-runtime initializes as the most likely; the latency
        # histogram gets its series with the first request, as there.
        for code in ("200", "500"):
            self.metrics.webhook_requests.labels(webhook, code)
        self.metrics.webhook_in_flight.labels(webhook)

    def admission_started(self, webhook: str) -> None:
        self.metrics.webhook_in_flight.labels(webhook).inc()

    def admission_reviewed(self, review: WebhookReview) -> None:
        m = self.metrics
        m.webhook_in_flight.labels(review.webhook).dec()
        m.webhook_requests.labels(review.webhook, str(review.code)).inc()
        m.webhook_latency.labels(review.webhook).observe(review.duration)
        # A malformed review (no decision, HTTP 400/413) admitted nothing: counted as not
        # allowed, under its reason (Malformed).
        allowed = "true" if review.allowed else "false"
        m.webhook_decisions.labels(review.webhook, allowed, review.reason).inc()
        if review.panicked:
            m.webhook_panics.inc()

    def observer_failed(self, observer: str, method: str) -> None:
        self.metrics.observer_failures.labels(observer).inc()


def _result_of(outcome: Outcome, reason: CancelReason | None) -> str:
    """controller-runtime's `result` label for how a reconcile ended.

    A cancellation that is a failure (its deadline, a call's own timeout) is an
    error, as controller-runtime counts a reconcile that returns a context error.
    Any other cancellation (shutdown, leader_lost, deleted, parent_cancelled) is
    no error: the key goes back on the queue (or, at shutdown, to the next
    leader's initial list), so it counts as `requeue`.
    """
    if outcome is not Outcome.CANCELLED:
        return _RESULT_LABEL[outcome]
    assert reason is not None
    return "error" if is_failure(reason) else "requeue"
