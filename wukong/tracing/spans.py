"""Reconcile spans: the tracing observer of the runtime.

`ReconcileTracer` is a `RuntimeObserver`; register it with the manager
(`Manager(observers=[ReconcileTracer(provider=..., sampling=...)])`).

One span per reconcile, `reconcile <Kind>`, and one child span per API call it
made, with its real start and end times. Whether a reconcile's trace is kept is
decided when it ends (`sampling.TailSampling`): every cancelled, failed or slow
reconcile is exported complete, the others at a ratio. So nothing of the SDK is
made while the reconcile runs:

- STARTED: the reconcile gets its trace and span ids at once, in a
  `PendingReconcile`: a non-recording span with those ids (flagged sampled),
  set as `ctx.span` and made current in the task that runs the reconcile (the
  runtime reports STARTED and FINISHED there), taken back at FINISHED.
  Everything that reads the reconcile's span meanwhile sees its final ids:
  `ctx.span` (log lines, metrics exemplars, probes, the shard attribute), the
  requeue links of the reconciles it schedules, spans the reconciler makes
  itself (their parent), and the traceparent of its API calls.
- CANCEL_REQUESTED / STUCK and every API call are kept on the side as plain
  tuples (a name, attributes, a time; the finished `ApiCall` itself).
- FINISHED: the decision. Kept: the SDK's tracer makes the real spans through
  its public API (`start_span` with the recorded start time, `add_event` with
  the recorded times, `end` with the end time); the reconcile span gets its
  pre-chosen ids from `PresetIds`, the provider's id generator, which hands
  them out once and otherwise delegates to the generator it wraps. Dropped:
  the tuples are forgotten, no SDK span was ever made.

The reconcile span carries the deadline, timeout, requeue lateness, what
queued it (`wukong.reconcile.trigger`: the first trigger's kind;
`wukong.reconcile.triggers`: one short line per trigger the queue kept;
`wukong.reconcile.trigger_count`: all it coalesced) with `requeued_by` links
to the reconciles that asked for it, why its trace was kept
(`wukong.trace.kept`), and at its end the remaining budget, cancel reason,
requeue-after, result and `error.type`, events (`deadline exceeded`,
`cancelled`, `cancellation ignored`, `conflict`, the exception) and an explicit
status: ERROR for deadline_exceeded and api_timeout (work did not finish when
it should have, `cancellation.is_failure`); OK for shutdown, leader_lost,
deleted and parent_cancelled (a stop the operator chose or was told to make).

One span per admission request a webhook answered, `admission <Kind>` (kind
SERVER), a child of the caller's span when its headers carry one (W3C
`traceparent`: the API server's call of the webhook), with the review's
deadline and timeout, the decision and its reason; a rejection or an
unverified admission carries the message as an event. Its span id is the one
the webhook made current while its validator ran, so the validator's API calls
(a child span each, made when the call ends) are its children. Kept by the
reconciles' policy, decided when the review is answered: every denied,
undecided or slow review, every review whose caller kept its trace, the others
at the ratio.

A requeue link or exemplar may name a reconcile whose trace was not kept; the
spans a reconciler makes itself inside a reconcile follow the provider's
sampler (its parent is flagged sampled), whatever becomes of the reconcile.
"""

import random
import threading
import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context as OtelContext
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TracerProvider,
)
from opentelemetry.util import types

from wukong.runtime import CancelReason, Conflict, ReconcileContext, RuntimeObserver
from wukong.runtime.observe import (
    ApiCall,
    ControllerView,
    LifecycleEvent,
    Outcome,
    Step,
    WebhookReview,
    is_failure,
    prepare_trace_headers,
)
from wukong.tracing.sampling import KeptTraces, TailSampling, sampled_by_ratio

_NS = 1_000_000_000
_OK = Status(StatusCode.OK)  # immutable: one for every span that ends well
# A reconcile is a root: it is caused by the queue, not by whatever context the
# worker happened to run in.
_ROOT = otel_context.Context()
# A running reconcile's flags: sampled alone. Its API calls' traceparent then
# goes as it is (kube-apiserver ignores one with more flags, see _transport),
# and older SDKs have no random-trace-id flag.
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_SPAN_ID_BITS = 64
_SPAN_ID_MASK = (1 << _SPAN_ID_BITS) - 1
# A webhook's reasons for a review it could not decide (it errored or timed out):
# written with an error (the default) or admitted unchecked (`AdmitOnError`).
_UNDECIDED = frozenset({"Errored", "Unverified"})


class PresetIds(IdGenerator):
    """The provider's id generator: ids handed to `preset` are the next ones this
    thread gets (once each), any other id comes from the wrapped generator."""

    def __init__(self, fallback: IdGenerator | None = None) -> None:
        self.fallback = fallback if fallback is not None else RandomIdGenerator()
        self._next = threading.local()

    def preset(self, trace_id: int, span_id: int) -> None:
        self._next.trace_id = trace_id
        self._next.span_id = span_id

    def generate_trace_id(self) -> int:
        trace_id: int = getattr(self._next, "trace_id", 0)
        if trace_id:
            self._next.trace_id = 0
            return trace_id
        return self.fallback.generate_trace_id()

    def generate_span_id(self) -> int:
        span_id: int = getattr(self._next, "span_id", 0)
        if span_id:
            self._next.span_id = 0
            return span_id
        return self.fallback.generate_span_id()

    def is_trace_id_random(self) -> bool:
        # Older SDKs' generators have no such method.
        is_random = getattr(self.fallback, "is_trace_id_random", None)
        return bool(is_random()) if is_random is not None else False


class PendingReconcile(NonRecordingSpan):
    """A running reconcile's span: its final ids, and what happened to it so far
    kept as plain tuples. `add_event` and `set_attribute(s)` are kept too, and
    end up on the real span if the trace is kept.

    What most reconciles leave as it starts is a class attribute, set on the
    instance only when it changes (each reconcile makes one of these)."""

    # The OpenTelemetry context the reconcile runs in (this span current): while
    # it is still the current one, an API call's parent is this span, known
    # without looking the span up. None once the reconcile has ended (it refers
    # to this span: a cycle only the garbage collector would free).
    otel_context: OtelContext | None = None
    # What takes back, at FINISHED, the contextvars set at STARTED.
    tokens: tuple[Any, Any] | None = None
    # Made on first use: most reconciles have neither.
    events: list[tuple[str, types.Attributes, int]] | None = None
    attributes: dict[str, types.AnyValue] | None = None
    decided = False  # FINISHED was seen
    kept = False

    # Its `SpanContext`, made when first asked for (a log line, an exemplar, a kept
    # trace): most reconciles' never is.
    _span_context: SpanContext | None = None

    def __init__(self, trace_id: int, span_id: int, name: str) -> None:
        # Not NonRecordingSpan's __init__: it takes the SpanContext made ahead.
        self.trace_id = trace_id
        self.span_id = span_id
        self.name = name
        # each API call with its parent span's context (None: this reconcile)
        self.calls: list[tuple[ApiCall, SpanContext | None]] = []

    def get_span_context(self) -> SpanContext:
        context = self._span_context
        if context is None:
            context = self._span_context = SpanContext(
                self.trace_id, self.span_id, is_remote=False, trace_flags=_SAMPLED
            )
        return context

    def __repr__(self) -> str:
        return f"PendingReconcile({self.name!r}, {self.get_span_context()!r})"

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        if self.events is None:
            self.events = []
        self.events.append((name, attributes, timestamp or time.time_ns()))

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        if self.attributes is None:
            self.attributes = {}
        self.attributes[key] = value

    def set_attributes(self, attributes: types.Attributes) -> None:
        if attributes:
            if self.attributes is None:
                self.attributes = {}
            self.attributes.update(attributes)


class ReconcileTracer(RuntimeObserver):
    """The observer that produces the contract's reconcile and API-call spans,
    keeping the traces `sampling` says (default: every one)."""

    name = "tracing"

    def __init__(self, *, provider: TracerProvider, sampling: TailSampling | None = None) -> None:
        self._sampling = sampling if sampling is not None else TailSampling()
        self._keep_bound = self._sampling.bound
        self._kept = KeptTraces(self._sampling)
        # The reconcile span is made at its end with the ids it had from its
        # start: the provider's id generator must be one that takes preset ids.
        self._ids: PresetIds | None = None
        if isinstance(provider, SdkTracerProvider):
            ids: IdGenerator = provider.id_generator
            if not isinstance(ids, PresetIds):
                ids = PresetIds(ids)
                provider.id_generator = ids  # type: ignore[assignment]  # typed too narrowly
            self._ids = ids
        self._tracer = provider.get_tracer("wukong.runtime")
        self._fallback: IdGenerator = self._ids.fallback if self._ids else RandomIdGenerator()
        # The SDK's own generator draws its ids from `random`: drawn here in one go,
        # the same ids without its two calls a reconcile.
        self._random_ids = type(self._fallback) is RandomIdGenerator
        # controller name -> span name of its reconciles
        self._names: dict[str, str] = {}

    def controller_added(self, controller: ControllerView) -> None:
        self._names[controller.name] = f"reconcile {controller.kind}"

    # -- lifecycle -------------------------------------------------------------------

    def reconcile(self, event: LifecycleEvent) -> None:
        step = event.step
        if step is Step.STARTED:
            self._start(event)
            return
        pending = event.context.span
        if type(pending) is not PendingReconcile:
            return
        if step is Step.FINISHED:
            self._finish(pending, event)
        elif step is Step.CANCEL_REQUESTED:
            name = (
                "deadline exceeded"
                if event.reason is CancelReason.DEADLINE_EXCEEDED
                else "cancelled"
            )
            pending.add_event(name, {"wukong.cancel.reason": str(event.reason)})
        elif step is Step.STUCK:
            pending.add_event("cancellation ignored", {"wukong.cancel.reason": str(event.reason)})

    def _start(self, event: LifecycleEvent) -> None:
        ctx = event.context
        trace_id = span_id = bits = 0
        if self._random_ids:
            bits = random.getrandbits(128 + _SPAN_ID_BITS)
            trace_id, span_id = bits >> _SPAN_ID_BITS, bits & _SPAN_ID_MASK
        if not trace_id or not span_id:  # another generator, or a 0 drawn (no id)
            trace_id = self._fallback.generate_trace_id()
            span_id = self._fallback.generate_span_id()
            bits = trace_id << _SPAN_ID_BITS | span_id
        pending = PendingReconcile(
            trace_id, span_id, self._names.get(ctx.controller) or f"reconcile {ctx.controller}"
        )
        ctx.span = pending
        # Current in the task that runs the reconcile (STARTED is reported there),
        # with the `traceparent` its API calls send made now from the ids (flagged
        # sampled alone; no trace state or baggage in `_ROOT`): not looked up and
        # formatted by each call. Taken back at FINISHED (`_finish`).
        context = pending.otel_context = trace.set_span_in_context(pending, _ROOT)
        # "<trace id>-<span id>" in hex from their 24 bytes, a dash after the first 16:
        # half the time of formatting the two ints.
        ids = bits.to_bytes(24, "big").hex("-", -16)
        pending.tokens = (
            otel_context.attach(context),
            prepare_trace_headers(context, f"00-{ids}-01"),
        )

    def _finish(self, pending: PendingReconcile, event: LifecycleEvent) -> None:
        ctx = event.context
        # Take back what `_start` made current (FINISHED is reported in the same task).
        attached, prepared = pending.tokens or (None, None)
        if prepared is not None:
            prepared.var.reset(prepared)
        if attached is not None:
            otel_context.detach(attached)
        pending.tokens = pending.otel_context = None
        pending.decided = True
        outcome, duration = event.outcome, event.duration
        assert outcome is not None and duration is not None  # FINISHED carries both
        kept = self._kept.why(
            outcome, duration, ctx.timeout, pending.trace_id, ctx.controller, ctx.started
        )
        if kept is None:
            # Dropped: no SDK span made. The calls go now: each refers to the
            # context, which refers to this span (a cycle only the GC would free).
            pending.calls.clear()
            return
        pending.kept = True
        self._reconcile_span(pending, ctx, event, kept, time.time_ns())
        for call, parent in pending.calls:
            self._call_span(call, parent or pending.get_span_context())
        pending.calls.clear()

    def _reconcile_span(
        self,
        pending: PendingReconcile,
        ctx: ReconcileContext,
        event: LifecycleEvent,
        kept: str,
        end: int,
    ) -> None:
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
            "wukong.trace.kept": kept,
        }
        if ctx.due_at is not None:
            attributes["wukong.requeue.delay_ms"] = max(0.0, (ctx.started - ctx.due_at) * 1000)
        if pending.attributes:
            attributes.update(pending.attributes)
        attributes["wukong.reconcile.budget_remaining_ms"] = ctx.remaining() * 1000
        attributes["wukong.reconcile.result"] = str(event.outcome)
        if event.result is not None and event.result.requeue_after > 0:
            attributes["wukong.requeue.after_ms"] = event.result.requeue_after * 1000
        status = _OK
        error = event.error
        if event.outcome is Outcome.CANCELLED:
            reason = event.reason
            assert reason is not None  # the runtime decides one for every cancellation
            attributes["wukong.cancel.reason"] = str(reason)
            attributes["error.type"] = "cancelled"
            pending.add_event("cancelled", {"wukong.cancel.reason": str(reason)}, end)
            if is_failure(reason):
                status = Status(StatusCode.ERROR, f"cancelled: {reason}")
        elif event.outcome is Outcome.ERROR:
            attributes["error.type"] = type(error).__name__ if error else "error"
            status = Status(StatusCode.ERROR, str(error) if error else "error")
        span_context = pending.get_span_context()
        if self._ids is not None:
            self._ids.preset(span_context.trace_id, span_context.span_id)
        span = self._tracer.start_span(
            pending.name,
            context=_ROOT,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            links=links,
            start_time=int(ctx.started_wall.timestamp() * _NS),
        )
        for name, event_attributes, timestamp in pending.events or ():
            span.add_event(name, event_attributes, timestamp)
        if event.outcome is Outcome.ERROR and error is not None:
            span.record_exception(error, timestamp=end)
        span.set_status(status)
        span.end(end_time=end)

    # -- admission webhooks ------------------------------------------------------------

    def admission_reviewed(self, review: WebhookReview) -> None:
        caller = trace.get_current_span(propagate.extract(review.headers)).get_span_context()
        kept = self._admission_kept(review, caller)
        if kept is None:
            return
        attributes: dict[str, Any] = {
            "wukong.webhook": review.webhook,
            "url.path": review.webhook,
            "k8s.operation": review.operation,
            "wukong.admission.kind": review.kind,
            "wukong.admission.uid": review.uid,
            "wukong.admission.deadline": review.deadline.isoformat(),
            "wukong.admission.timeout_ms": review.timeout * 1000,
            "wukong.admission.reason": review.reason,
            "http.response.status_code": review.code,
            "wukong.trace.kept": kept,
        }
        if review.allowed is not None:
            attributes["wukong.admission.allowed"] = review.allowed
        if review.namespace:
            attributes["k8s.namespace.name"] = review.namespace
        if review.name:
            attributes["wukong.object.name"] = review.name
        if review.allowed is None:
            attributes["error.type"] = review.reason
        context = _ROOT
        links: list[Link] = []
        if caller.is_valid and caller.trace_flags.sampled:
            # The API server's call of the webhook is this span's parent: one trace.
            context = trace.set_span_in_context(NonRecordingSpan(caller))
            own = trace.get_current_span().get_span_context()
            if (
                own.trace_id == caller.trace_id
                and own.span_id != caller.span_id
                and self._ids is not None
            ):
                # The id the webhook chose, that its validator's calls have as parent.
                self._ids.preset(0, own.span_id)
        elif caller.is_valid:
            # The caller did not keep its trace: this one is a root, linked to it
            # (the SDK's parent-based sampler would drop a child of it).
            links.append(Link(caller, {"wukong.link": "caller"}))
        start = int(review.started * _NS)
        span = self._tracer.start_span(
            f"admission {review.kind or 'request'}",
            context=context,
            kind=SpanKind.SERVER,
            attributes=attributes,
            links=links,
            start_time=start,
        )
        if review.message:
            span.add_event(review.reason, {"message": review.message})
        if review.allowed is None or review.reason in _UNDECIDED:
            span.set_status(Status(StatusCode.ERROR, review.message))
        else:
            # A rejection is the webhook doing its job, not an error.
            span.set_status(_OK)
        span.end(end_time=start + int(review.duration * _NS))

    def _admission_kept(self, review: WebhookReview, caller: SpanContext) -> str | None:
        """Why an admission's span is kept (None: dropped), by the reconciles' policy:
        every denied, undecided or slow review; a review whose caller kept its trace
        (the span completes it); the others at the keep ratio, by the caller's trace id
        (a fresh one, then the span's, when none came)."""
        if review.allowed is None or review.reason in _UNDECIDED:
            return "error"
        if not review.allowed:
            return "denied"
        if self._sampling.is_slow(review.duration, review.timeout):
            return "slow"
        if caller.is_valid:
            if caller.trace_flags.sampled:
                return "caller"
            return "sampled" if sampled_by_ratio(caller.trace_id, self._keep_bound) else None
        trace_id = self._fallback.generate_trace_id()
        if not sampled_by_ratio(trace_id, self._keep_bound):
            return None
        if self._ids is not None:  # the span gets the trace id the choice was made on
            self._ids.preset(trace_id, self._fallback.generate_span_id())
        return "sampled"

    # -- API calls ---------------------------------------------------------------------

    def api_call(self, call: ApiCall) -> None:
        pending = call.reconcile.span if call.reconcile is not None else None
        if type(pending) is not PendingReconcile:
            # Outside a reconcile, a child of the span current where it was made if that
            # trace is kept (a webhook's validator under its admission); else none
            # (informers, leader election).
            where = trace.get_current_span().get_span_context()
            if call.reconcile is None and where.is_valid and where.trace_flags.sampled:
                self._call_span(call, where)
            return
        if pending.decided and not pending.kept:
            return
        made_in = otel_context.get_current()
        if made_in is pending.otel_context and call.error is None and not pending.decided:
            # Made right under the reconcile's span (most calls): its child, known
            # without looking the current span up.
            pending.calls.append((call, None))
            return
        # The innermost span the reconcile had open (its own child spans
        # included); the reconcile's span when the call ran elsewhere.
        current = trace.get_current_span(made_in)
        parent: SpanContext | None = None
        if current is not pending:
            current_context = current.get_span_context()
            if current_context.is_valid:
                parent = current_context
        if call.error is not None and call.cancel_reason is None:
            if isinstance(call.error, Conflict):
                (pending if parent is None else current).add_event(
                    "conflict", {"k8s.resource": call.resource}
                )
        if pending.decided:  # ended after its reconcile, which was kept
            self._call_span(call, parent or pending.get_span_context())
        else:
            pending.calls.append((call, parent))

    def _call_span(self, call: ApiCall, parent: SpanContext) -> None:
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
        error = call.error
        if error is not None:
            attributes["error.type"] = type(error).__name__
        start = int(call.started * _NS)
        span = self._tracer.start_span(
            f"{call.verb} {call.resource}",
            context=trace.set_span_in_context(NonRecordingSpan(parent)),
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=start,
        )
        if error is None:
            span.set_status(_OK)
        else:
            if call.cancel_reason is not None:
                span.add_event("cancelled", {"wukong.cancel.reason": str(call.cancel_reason)})
            span.set_status(Status(StatusCode.ERROR, str(error) or type(error).__name__))
        span.end(end_time=start + int(call.duration * _NS))
