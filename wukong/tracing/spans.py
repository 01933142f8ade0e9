"""Reconcile spans: the tracing observer of the runtime.

`ReconcileTracer` is a `RuntimeObserver`; register it with the manager
(`Manager(observers=[ReconcileTracer(provider=...)])`).

One span per reconcile, `reconcile <Kind>`:

- STARTED: the span starts, linked to the reconcile that scheduled this one
  (a requeue), with the deadline, timeout, requeue lateness and what queued
  it (`wukong.reconcile.trigger`: the first trigger's kind;
  `wukong.reconcile.triggers`: one short line per trigger the queue kept;
  `wukong.reconcile.trigger_count`: all it coalesced); it is made
  current in the reconcile task's context, so everything the reconcile awaits
  (API calls, its own spans, log lines) is inside it.
- CANCEL_REQUESTED: event `deadline exceeded` or `cancelled`, with the reason.
- STUCK: event `cancellation ignored`.
- FINISHED: remaining budget, cancel reason, requeue-after, result and
  `error.type`; an explicit status, then the span ends.

Why not `with tracer.start_as_current_span(...)`: the span outlives any single
block of the reconcile, and the SDK's context manager ends a span interrupted by
`CancelledError` with status UNSET and no event, which hides exactly the
reconciles an SRE is looking for. Here every cancelled span gets an event and
an explicit status: ERROR for deadline_exceeded and api_timeout (work did not
finish when it should have, `cancellation.is_failure`); OK for shutdown,
leader_lost, deleted and parent_cancelled (a stop the operator chose or was
told to make).

One span per admission request a webhook answered, `admission <Kind>` (kind
SERVER), with the review's deadline and timeout, the decision and its reason;
a rejection or an unverified admission carries the message as an event.

API calls become child spans after they finish, with their real start and end
times (`ApiCall` carries both, and the reconcile they were made for), so the
client needs no tracing code.

The spans are made by `SpanRecorder` (tracing/recorder.py): the SDK's spans,
sampler, limits and processors, without most of the SDK tracer's CPU per span.
"""

from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, TracerProvider

from wukong.runtime import CancelReason, Conflict, ReconcileContext, RuntimeObserver
from wukong.runtime.observe import (
    ApiCall,
    ControllerView,
    LifecycleEvent,
    Outcome,
    Step,
    WebhookReview,
    is_failure,
)
from wukong.tracing.recorder import SpanRecorder

_NS = 1_000_000_000
_OK = Status(StatusCode.OK)  # immutable: one for every span that ends well
# A reconcile is a root: it is caused by the queue, not by whatever context the
# worker happened to run in.
_ROOT = otel_context.Context()


class ReconcileTracer(RuntimeObserver):
    """The observer that produces the contract's reconcile and API-call spans."""

    name = "tracing"

    def __init__(self, *, provider: TracerProvider) -> None:
        self._spans = SpanRecorder(provider, "wukong.runtime")
        # controller name -> primary kind, for span names
        self._kinds: dict[str, str] = {}

    def controller_added(self, controller: ControllerView) -> None:
        self._kinds[controller.name] = controller.kind

    # -- lifecycle -------------------------------------------------------------------

    def reconcile(self, event: LifecycleEvent) -> None:
        ctx = event.context
        if event.step is Step.STARTED:
            self._start(event)
        elif ctx.span is None:
            return
        elif event.step is Step.CANCEL_REQUESTED:
            name = (
                "deadline exceeded"
                if event.reason is CancelReason.DEADLINE_EXCEEDED
                else "cancelled"
            )
            ctx.span.add_event(name, {"wukong.cancel.reason": str(event.reason)})
        elif event.step is Step.STUCK:
            ctx.span.add_event("cancellation ignored", {"wukong.cancel.reason": str(event.reason)})
        elif event.step is Step.FINISHED:
            self._finish(ctx, event)

    def _start(self, event: LifecycleEvent) -> None:
        ctx = event.context
        triggers = ctx.triggers
        links = [
            Link(trigger.link.span.get_span_context(), {"wukong.link": "requeued_by"})
            for trigger in triggers
            if trigger.link is not None and trigger.link.span is not None
        ]
        attributes: dict[str, Any] = {
            "k8s.namespace.name": ctx.request.namespace,
            "wukong.object.name": ctx.request.name,
            "wukong.controller": ctx.controller,
            "wukong.reconcile.id": ctx.reconcile_id,
            "wukong.reconcile.deadline": ctx.deadline_wall.isoformat().replace("+00:00", "Z"),
            "wukong.reconcile.timeout_ms": round(ctx.timeout * 1000),
            "wukong.reconcile.trigger": str(triggers[0].kind) if triggers else "unknown",
            "wukong.reconcile.triggers": [str(trigger) for trigger in triggers],
            "wukong.reconcile.trigger_count": ctx.trigger_count,
        }
        if ctx.due_at is not None:
            attributes["wukong.requeue.delay_ms"] = max(0.0, (ctx.started - ctx.due_at) * 1000)
        kind = self._kinds.get(ctx.controller, ctx.controller)
        span = self._spans.start(
            f"reconcile {kind}",
            context=_ROOT,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            links=links,
            start_time=int(ctx.started_wall.timestamp() * _NS),
        )
        # Current inside the reconcile task; the context reads it back from there.
        assert event.task_context is not None
        event.task_context.run(otel_context.attach, trace.set_span_in_context(span))

    def _finish(self, ctx: ReconcileContext, event: LifecycleEvent) -> None:
        span = ctx.span
        # One set_attributes call: the SDK locks and checks the span once per call.
        attributes: dict[str, Any] = {
            "wukong.reconcile.budget_remaining_ms": ctx.remaining() * 1000,
            "wukong.reconcile.result": str(event.outcome),
        }
        if event.result is not None and event.result.requeue_after > 0:
            attributes["wukong.requeue.after_ms"] = event.result.requeue_after * 1000
        if event.outcome is Outcome.CANCELLED:
            reason = event.reason
            assert reason is not None  # the runtime decides one for every cancellation
            attributes["wukong.cancel.reason"] = str(reason)
            attributes["error.type"] = "cancelled"
            span.set_attributes(attributes)
            span.add_event("cancelled", {"wukong.cancel.reason": str(reason)})
            if is_failure(reason):
                span.set_status(Status(StatusCode.ERROR, f"cancelled: {reason}"))
            else:
                span.set_status(_OK)
        elif event.outcome is Outcome.ERROR:
            error = event.error
            attributes["error.type"] = type(error).__name__ if error else "error"
            span.set_attributes(attributes)
            if error is not None:
                span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, str(error) if error else "error"))
        else:
            span.set_attributes(attributes)
            span.set_status(_OK)
        span.end()

    # -- admission webhooks ------------------------------------------------------------

    def admission_reviewed(self, review: WebhookReview) -> None:
        attributes: dict[str, Any] = {
            "wukong.webhook": review.webhook,
            "k8s.operation": review.operation,
            "wukong.admission.deadline": review.deadline.isoformat(),
            "wukong.admission.timeout_ms": review.timeout * 1000,
            "wukong.admission.reason": review.reason,
            "http.response.status_code": review.code,
        }
        if review.allowed is not None:
            attributes["wukong.admission.allowed"] = review.allowed
        if review.namespace:
            attributes["k8s.namespace.name"] = review.namespace
        if review.name:
            attributes["wukong.object.name"] = review.name
        start = int(review.started * _NS)
        span = self._spans.start(
            f"admission {review.kind or 'request'}",
            context=None,  # the current context, as start_span takes it
            kind=SpanKind.SERVER,
            attributes=attributes,
            start_time=start,
        )
        if review.message:
            span.add_event(review.reason, {"message": review.message})
        if review.allowed is None:
            span.set_attribute("error.type", review.reason)
            span.set_status(Status(StatusCode.ERROR, review.message))
        else:
            # A rejection is the webhook doing its job, not an error.
            span.set_status(_OK)
        span.end(end_time=start + int(review.duration * _NS))

    # -- API calls ---------------------------------------------------------------------

    def api_call(self, call: ApiCall) -> None:
        if call.reconcile is None or call.reconcile.span is None:
            return  # not made for a traced reconcile (informers, leader election)
        # The innermost span the reconcile had open (its own child spans
        # included); the reconcile's span when the call ran elsewhere.
        parent_context = otel_context.get_current()
        parent = trace.get_current_span(parent_context)
        if not parent.get_span_context().is_valid:
            parent = call.reconcile.span
            parent_context = trace.set_span_in_context(parent)
        attributes: dict[str, Any] = {
            "http.request.method": call.method,
            "k8s.verb": call.verb,
            "k8s.resource": call.resource,
            "wukong.api.retries": call.retries,
        }
        if call.namespace:
            attributes["k8s.namespace.name"] = call.namespace
        if call.status_code is not None:
            attributes["http.response.status_code"] = call.status_code
        start = int(call.started * _NS)
        span = self._spans.start(
            f"{call.verb} {call.resource}",
            context=parent_context,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=start,
        )
        error = call.error
        if error is None:
            span.set_status(_OK)
        else:
            span.set_attribute("error.type", type(error).__name__)
            if call.cancel_reason is not None:
                span.add_event("cancelled", {"wukong.cancel.reason": str(call.cancel_reason)})
            elif isinstance(error, Conflict):
                parent.add_event("conflict", {"k8s.resource": call.resource})
            span.set_status(Status(StatusCode.ERROR, str(error) or type(error).__name__))
        span.end(end_time=start + int(call.duration * _NS))
