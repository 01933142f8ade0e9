"""The trace context an API call carries: only under a valid span, in a form Go accepts."""

import asyncio
import contextvars

import pytest
from kubernetes_asyncio import client as k8s_client
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from tests.running import configmap_controller
from wukong.runtime import (
    CancelReason,
    Client,
    ReconcileContext,
    Request,
    Result,
)
from wukong.runtime._transport import (
    GET,
    Call,
    _headers,
    _trace_context_headers,
    prepare_trace_headers,
)
from wukong.runtime.resources import CONFIGMAPS
from wukong.tracing.spans import ReconcileTracer

CALL = Call(GET, CONFIGMAPS, "ns", "/api/v1/namespaces/ns/configmaps/a", [])
PLAIN = {"Accept": "application/json", "Content-Type": "application/json"}


def _under(span_context: SpanContext) -> dict[str, str]:
    token = context.attach(trace.set_span_in_context(NonRecordingSpan(span_context)))
    try:
        return _headers(CALL)
    finally:
        context.detach(token)


def test_no_span_no_trace_headers() -> None:
    assert _headers(CALL) == PLAIN
    assert _under(trace.INVALID_SPAN_CONTEXT) == PLAIN


def test_the_current_span_is_the_parent_with_its_trace_state() -> None:
    state = TraceState([("vendor", "value")])
    headers = _under(SpanContext(0xABC, 0xDEF, False, TraceFlags(TraceFlags.SAMPLED), state))
    assert headers == {
        **PLAIN,
        "traceparent": f"00-{0xABC:032x}-{0xDEF:016x}-01",
        "tracestate": "vendor=value",
    }


def test_only_the_sampled_flag_is_sent() -> None:
    # The SDK flags the ids it draws as random (0x02): kube-apiserver 1.36 would
    # then ignore the header, so it is left out; the span's own flags stay.
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("reconcile") as span:
        ids = span.get_span_context()
        assert ids.trace_flags == 0x03
        headers = _headers(CALL)
    assert headers["traceparent"] == f"00-{ids.trace_id:032x}-{ids.span_id:016x}-01"
    unsampled = SpanContext(0xABC, 0xDEF, False, TraceFlags(0x02))
    assert _under(unsampled)["traceparent"].endswith("-00")


def test_baggage_goes_along_when_the_flags_are_trimmed() -> None:
    token = context.attach(baggage.set_baggage("tenant", "a"))
    try:
        headers = _under(SpanContext(0xABC, 0xDEF, False, TraceFlags(0x03)))
    finally:
        context.detach(token)
    assert headers["baggage"] == "tenant=a"
    assert headers["traceparent"].endswith("-01")


def test_each_span_made_current_gets_its_own_headers() -> None:
    # Headers are kept with the context they were made for: a span made current
    # after them (a child, then the parent again) is never sent the other's.
    parent = SpanContext(0xABC, 0xDEF, False, TraceFlags(TraceFlags.SAMPLED))
    child = SpanContext(0xABC, 0x123, False, TraceFlags(TraceFlags.SAMPLED))
    token = context.attach(trace.set_span_in_context(NonRecordingSpan(parent)))
    try:
        first = _headers(CALL)
        assert _headers(CALL) == first
        assert _under(child)["traceparent"] == f"00-{0xABC:032x}-{0x123:016x}-01"
        assert _headers(CALL) == first
        first["traceparent"] = "changed by the caller"  # each call gets its own dict
        assert _headers(CALL)["traceparent"] == f"00-{0xABC:032x}-{0xDEF:016x}-01"
    finally:
        context.detach(token)
    assert _headers(CALL) == PLAIN


class _Custom(TextMapPropagator):
    """A propagator of another format than W3C's."""

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        return context or Context()

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        ids = trace.get_current_span(context).get_span_context()
        setter.set(carrier, "x-trace", f"{ids.trace_id:x}:{ids.span_id:x}")

    @property
    def fields(self) -> set[str]:
        return {"x-trace"}


def test_the_configured_propagators_write_the_headers() -> None:
    # W3C's headers are written directly only while W3C's propagators are the
    # configured ones; any other goes through its own inject.
    default = propagate.get_global_textmap()
    propagate.set_global_textmap(_Custom())
    try:
        headers = _under(SpanContext(0xABC, 0xDEF, False, TraceFlags(TraceFlags.SAMPLED)))
    finally:
        propagate.set_global_textmap(default)
    assert headers == {**PLAIN, "x-trace": "abc:def"}
    direct = _under(SpanContext(0xABC, 0xDEF, False, TraceFlags(0x03), TraceState([("v", "1")])))
    expected: dict[str, str] = {}
    level_one = SpanContext(0xABC, 0xDEF, False, TraceFlags(0x01), TraceState([("v", "1")]))
    propagate.inject(expected, context=trace.set_span_in_context(NonRecordingSpan(level_one)))
    assert direct == {**PLAIN, **expected}


def test_prepared_headers_go_under_their_context_only() -> None:
    parent = trace.set_span_in_context(
        NonRecordingSpan(SpanContext(0xABC, 0xDEF, False, TraceFlags(TraceFlags.SAMPLED)))
    )
    child = SpanContext(0xABC, 0x123, False, TraceFlags(TraceFlags.SAMPLED))

    def calls() -> tuple[dict[str, str], dict[str, str]]:
        context.attach(parent)
        prepare_trace_headers(parent, "00-prepared-01")
        return _headers(CALL), _under(child)

    prepared, under_child = contextvars.copy_context().run(calls)
    assert prepared == {**PLAIN, "traceparent": "00-prepared-01"}
    # A span made current over it (a reconciler's own) is the parent the server sees.
    assert under_child["traceparent"] == f"00-{0xABC:032x}-{0x123:016x}-01"
    assert _headers(CALL) == PLAIN


class SendsHeaders:
    """Records the headers each reconcile's API call would send, those the current
    span makes, the reconcile's span ids and the task it ran in."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[dict[str, str], dict[str, str], SpanContext, object]] = {}

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        made = _trace_context_headers(context.get_current())
        self.seen[request.name] = (
            _headers(CALL),
            made,
            ctx.span.get_span_context(),
            asyncio.current_task(),
        )
        return Result()


@pytest.mark.looptime  # the worker's turn (1 ms of loop time) does not end under load
async def test_a_traced_reconcile_sends_its_spans_headers_as_made_at_its_start() -> None:
    reconciler = SendsHeaders()
    async with Client(k8s_client.ApiClient(configuration=k8s_client.Configuration())) as client:
        tracer = ReconcileTracer(provider=TracerProvider())
        controller = configmap_controller(reconciler, client, tracer, workers=1)
        controller.start()
        for name in ("a", "b", "c"):
            controller.enqueue(Request("ns", name))
        await asyncio.sleep(0.1)
        await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)
    assert set(reconciler.seen) == {"a", "b", "c"}
    for sent, made, ids, _ in reconciler.seen.values():
        # The same bytes the transport would make from the current span: its ids,
        # the sampled flag alone, no trace state.
        assert sent == {**PLAIN, **made}
        assert made == {"traceparent": f"00-{ids.trace_id:032x}-{ids.span_id:016x}-01"}
    assert len({ids.span_id for _, _, ids, _ in reconciler.seen.values()}) == 3
    # The worker took each span back and went on: one task for the three.
    assert len({task for *_, task in reconciler.seen.values()}) == 1
