"""The trace context an API call carries: only under a valid span, in a form Go accepts."""

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

from wukong.runtime._transport import GET, Call, _headers
from wukong.runtime.resources import CONFIGMAPS

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
