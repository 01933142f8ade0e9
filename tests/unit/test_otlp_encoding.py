"""Wukong's OTLP span encoder writes exactly the bytes of the SDK's encoder."""

import logging

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.span import TraceState

from wukong.tracing.otlp import GrpcSpanExporter, encode_spans

EVERY_VALUE = {
    "str": "héllo",
    "empty": "",
    "true": True,
    "false": False,
    "zero": 0,
    "negative": -5,
    "big": 2**63 - 1,
    "float": 1.5,
    "float.zero": 0.0,
    "float.negative_zero": -0.0,
    "bytes": b"\x00\xff",
    "strs": ("a", ""),
    "bools": (True, False),
    "ints": (0, -1, 300),
    "floats": (0.5, 0.0),
    "none.inside": ("a", None),
    "empty.tuple": (),
    "mapping": {"k": "v", "n": 1, "nested": {"x": (1, 2)}},
    "long": "x" * 20_000,  # a length that takes three varint bytes
}


def _spans() -> list[ReadableSpan]:
    spans: list[ReadableSpan] = []
    for resource in (
        Resource.create({"service.name": "a"}),
        Resource({"service.name": "b", "n": 2}, schema_url="https://example.com/r"),
    ):
        kept = InMemorySpanExporter()
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(SimpleSpanProcessor(kept))
        plain = provider.get_tracer("wukong.runtime")
        versioned = provider.get_tracer(
            "lib", "1.2", schema_url="https://example.com/s", attributes={"scope.attr": 1}
        )
        remote = NonRecordingSpan(
            SpanContext(
                trace_id=0x0123456789ABCDEF0123456789ABCDEF,
                span_id=0x0123456789ABCDEF,
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
                trace_state=TraceState([("vendor", "value"), ("other", "x")]),
            )
        )
        root = plain.start_span(
            "reconcile Wukong",
            context=trace.set_span_in_context(remote),
            kind=SpanKind.INTERNAL,
            attributes=EVERY_VALUE,
            links=[Link(remote.get_span_context(), {"wukong.link": "requeued_by"})],
        )
        with trace.use_span(root, end_on_exit=True):
            for kind in (SpanKind.CLIENT, SpanKind.SERVER, SpanKind.PRODUCER, SpanKind.CONSUMER):
                child = versioned.start_span(f"child {kind.name}", kind=kind)
                child.add_event("cancelled", {"wukong.cancel.reason": "deadline_exceeded"})
                child.add_event("bare")
                child.set_status(trace.Status(trace.StatusCode.ERROR, "cancelled: deadline"))
                child.end()
            root.set_status(trace.Status(trace.StatusCode.OK))
        plain.start_span("").end()  # no name, status unset
        spans.extend(kept.get_finished_spans())
    # Interleaved resources and scopes: grouping must keep the SDK's order.
    return spans[::2] + spans[1::2]


def test_same_bytes_as_the_sdk() -> None:
    spans = _spans()
    assert len(spans) == 12
    assert encode_spans(spans) == sdk_encode(spans).SerializeToString()
    assert encode_spans([]) == sdk_encode([]).SerializeToString() == b""


def test_grpc_exporter_sends_the_sdks_message() -> None:
    spans = _spans()
    exporter = GrpcSpanExporter(endpoint="localhost:1", insecure=True)
    try:
        assert exporter._translate_data(spans) == sdk_encode(spans)
    finally:
        exporter.shutdown()


def test_a_value_out_of_range_is_left_out_as_the_sdk_does(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kept = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(kept))
    provider.get_tracer("t").start_span("s", attributes={"huge": 2**64, "ok": "yes"}).end()
    spans = kept.get_finished_spans()
    with caplog.at_level(logging.ERROR):
        ours = encode_spans(spans)
    assert "Failed to encode key huge" in caplog.text
    assert ours == sdk_encode(spans).SerializeToString()
    assert b"ok" in ours and b"huge" not in ours
