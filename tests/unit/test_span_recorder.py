"""SpanRecorder's spans are the SDK tracer's spans: same decisions, same exported bytes.

Each test makes the same spans twice, once through `SpanRecorder.start` and once
through the SDK's `Tracer.start_span`, on two providers configured alike (ids
from the same deterministic generator, fixed timestamps), and compares what an
exporter gets: the OTLP request's bytes and each span's `to_json()`.
"""

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, NonRecordingSpan, SpanKind, Status, StatusCode
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from wukong.tracing.recorder import RecordedSpan, SpanRecorder


class Counting(IdGenerator):
    """Ids that differ in every bit the ratio sampler looks at, the same in each run."""

    def __init__(self) -> None:
        self._next = itertools.count(1)

    def generate_span_id(self) -> int:
        return (next(self._next) * 0x9E3779B97F4A7C15) % 2**64 or 1

    def generate_trace_id(self) -> int:
        return (next(self._next) * 0x9E3779B97F4A7C15F39CC0605CEDC835) % 2**128 or 1

    def is_trace_id_random(self) -> bool:
        return True  # so the contexts carry the W3C random-trace-id flag too


class Tagging(Sampler):
    """A sampler that adds attributes (one the SDK must clean) and a trace state."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        return SamplingResult(
            Decision.RECORD_AND_SAMPLE,
            {**(attributes or {}), "sampler.rule": ["a", "b"]},
            TraceState([("rule", "tagging")]),
        )

    def get_description(self) -> str:
        return "Tagging"


class Starts(SpanProcessor):
    """Every span a processor is told of at its start, with the parent's context."""

    def __init__(self) -> None:
        self.started: list[tuple[str, int | None]] = []

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        parent = trace.get_current_span(parent_context).get_span_context()
        self.started.append((span.name, parent.span_id if parent.is_valid else None))


Start = Callable[..., trace.Span]


def _provider(sampler: Sampler, limits: SpanLimits) -> tuple[TracerProvider, InMemorySpanExporter]:
    kept = InMemorySpanExporter()
    provider = TracerProvider(
        sampler=sampler,
        resource=Resource.create({"service.name": "wukong-test"}),
        id_generator=Counting(),
        span_limits=limits,
    )
    provider.add_span_processor(SimpleSpanProcessor(kept))
    return provider, kept


def _reconcile(start: Start, user: trace.Tracer) -> None:
    """What ReconcileTracer and a reconciler do with spans, and what users may do to
    the reconcile's span (`ctx.span`)."""
    earlier = start(
        "reconcile Wukong",
        context=Context(),
        kind=SpanKind.INTERNAL,
        attributes={"wukong.controller": "main", "wukong.reconcile.timeout_ms": 15000},
        start_time=1_000,
    )
    earlier.end(end_time=2_000)
    span = start(
        "reconcile Wukong",
        context=Context(),
        kind=SpanKind.INTERNAL,
        attributes={
            "k8s.namespace.name": "default",
            "wukong.object.name": "vm-1",
            "wukong.reconcile.deadline": "2026-11-30T20:00:15.000Z",
            "wukong.reconcile.timeout_ms": 15000,
            "wukong.requeue.delay_ms": 1.25,
        },
        links=[
            Link(earlier.get_span_context(), {"wukong.link": "requeued_by"}),
            Link(trace.INVALID_SPAN_CONTEXT),  # left out, as by the SDK
        ],
        start_time=3_000,
    )
    inside = trace.set_span_in_context(span)
    # A user's span inside the reconcile, and a call made under it.
    own = user.start_span("user work", context=inside, start_time=3_100)
    call = start(
        "get configmaps",
        context=trace.set_span_in_context(own),
        kind=SpanKind.CLIENT,
        attributes={"http.request.method": "GET", "wukong.api.retries": 0, "ok": True},
        start_time=3_200,
    )
    call.set_attribute("error.type", "Conflict")
    call.add_event("cancelled", {"wukong.cancel.reason": "deadline_exceeded"}, timestamp=3_300)
    call.set_status(Status(StatusCode.ERROR, "cancelled: deadline_exceeded"))
    call.end(end_time=3_400)
    own.end(end_time=3_500)
    # What a user may do with `ctx.span`: values the SDK cleans, keys set again,
    # an attribute to cut, events with and without attributes, links, a new name.
    span.set_attribute("wukong.object.name", "vm-1 again")  # set again: moves to the end
    span.set_attributes({"k8s.namespace.name": "default", "user.n": 1})
    span.set_attributes({"user.list": [1, 2], "user.text": "long enough to be cut"})
    span.set_attribute("", "an empty key is dropped")
    span.set_attribute("user.none", None)
    span.add_event("bare", timestamp=3_600)
    span.add_event("listed", {"values": ("a", "b"), "n": 1, "m": 2}, timestamp=3_700)
    span.add_link(earlier.get_span_context(), {"why": "test"})
    span.update_name("reconcile Wukong (renamed)")
    span.set_attributes(
        {
            "wukong.reconcile.budget_remaining_ms": 14_998.5,
            "wukong.reconcile.result": "error",
            "error.type": "ValueError",
        }
    )
    span.record_exception(ValueError("boom"), timestamp=3_800)
    span.add_event("cancelled", {"wukong.cancel.reason": "shutdown"}, timestamp=3_850)
    span.set_status(Status(StatusCode.ERROR, "boom"))
    span.set_status(Status(StatusCode.OK))  # OK wins over ERROR, as in the SDK
    span.set_status(Status(StatusCode.ERROR, "ignored after OK"))
    span.end(end_time=4_000)
    span.set_attribute("after.end", 1)  # ignored, as in the SDK
    span.add_event("after end", timestamp=4_100)
    span.end(end_time=5_000)
    # An admission review's span: no context given, so the current one.
    review = start(
        "admission Wukong",
        context=None,
        kind=SpanKind.SERVER,
        attributes={"k8s.operation": "CREATE", "wukong.admission.allowed": False},
        start_time=5_100,
    )
    review.add_event("Rejected", {"message": "spec.disks[0] is not a volume"}, timestamp=5_150)
    review.end(end_time=5_200)


def _run(through_recorder: bool, sampler: Sampler, limits: SpanLimits) -> Any:
    """`_reconcile` through SpanRecorder or the SDK's tracer: (exported spans, the starts
    processors were told of, every span made)."""
    provider, kept = _provider(sampler, limits)
    starts = Starts()
    provider.add_span_processor(starts)
    made: list[trace.Span] = []
    recorder = SpanRecorder(provider, "wukong.runtime")
    tracer = provider.get_tracer("wukong.runtime")

    def start(*args: Any, **kwargs: Any) -> trace.Span:
        if through_recorder:
            span = recorder.start(*args, **kwargs)
        else:
            span = tracer.start_span(*args, **kwargs)
        made.append(span)
        return span

    _reconcile(start, provider.get_tracer("user.code"))
    return kept.get_finished_spans(), starts.started, made


def _both(sampler: Callable[[], Sampler], limits: Callable[[], SpanLimits]) -> Any:
    return [_run(through, sampler(), limits()) for through in (False, True)]


SAMPLERS = {
    "default (parentbased_always_on)": lambda: ParentBased(ALWAYS_ON),
    "parentbased_traceidratio": lambda: ParentBased(TraceIdRatioBased(0.5)),
    "always_off": lambda: ALWAYS_OFF,
    "a sampler adding attributes": Tagging,
}
LIMITS = {
    "default limits": SpanLimits,
    "tight limits": lambda: SpanLimits(
        max_span_attributes=6,
        max_events=2,
        max_links=1,
        max_event_attributes=2,
        max_link_attributes=1,
        max_span_attribute_length=12,
        max_attribute_length=3,
    ),
    "no attributes at all": lambda: SpanLimits(max_attributes=0),
}


@pytest.mark.parametrize("limits", LIMITS.values(), ids=LIMITS.keys())
@pytest.mark.parametrize("sampler", SAMPLERS.values(), ids=SAMPLERS.keys())
def test_what_the_sdk_would_export(
    sampler: Callable[[], Sampler], limits: Callable[[], SpanLimits]
) -> None:
    (sdk_spans, sdk_starts, sdk_made), (spans, starts, made) = _both(sampler, limits)
    assert [span.name for span in spans] == [span.name for span in sdk_spans]
    assert sdk_encode(spans).SerializeToString() == sdk_encode(sdk_spans).SerializeToString()
    assert [span.to_json() for span in spans] == [span.to_json() for span in sdk_spans]
    assert starts == sdk_starts  # processors are told of the same starts
    # The same spans recorded, or not, with the same ids and flags either way.
    assert [(type(s) is NonRecordingSpan, s.get_span_context()) for s in made] == [
        (type(s) is NonRecordingSpan, s.get_span_context()) for s in sdk_made
    ]


def test_sampling_decides_as_configured() -> None:
    """parentbased_traceidratio: some reconciles are dropped, each with the user's
    spans inside it; the others are exported with theirs."""
    provider, kept = _provider(ParentBased(TraceIdRatioBased(0.5)), SpanLimits())
    recorder = SpanRecorder(provider, "wukong.runtime")
    user = provider.get_tracer("user.code")
    sampled = set()
    for _ in range(20):
        span = recorder.start(
            "reconcile", context=Context(), kind=SpanKind.INTERNAL, attributes={}, start_time=1
        )
        user.start_span("inside", context=trace.set_span_in_context(span)).end()
        span.end()
        if span.get_span_context().trace_flags.sampled:
            assert type(span) is RecordedSpan
            sampled.add(span.get_span_context().trace_id)
        else:
            assert type(span) is NonRecordingSpan
    assert 0 < len(sampled) < 20
    exported = kept.get_finished_spans()
    assert {span.context.trace_id for span in exported if span.context} == sampled
    assert sorted(span.name for span in exported) == sorted(["inside", "reconcile"] * len(sampled))


def test_the_current_span_parents_user_spans() -> None:
    provider, kept = _provider(ParentBased(ALWAYS_ON), SpanLimits())
    span = SpanRecorder(provider, "wukong.runtime").start(
        "reconcile Wukong", context=Context(), kind=SpanKind.INTERNAL, attributes={}, start_time=1
    )
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        with provider.get_tracer("user.code").start_as_current_span("child"):
            pass
    finally:
        otel_context.detach(token)
    span.end()
    child, parent = kept.get_finished_spans()
    assert child.parent is not None and child.parent.span_id == span.get_span_context().span_id
    assert child.context is not None and child.context.trace_id == parent.context.trace_id


def test_other_providers_make_their_own_spans() -> None:
    span = SpanRecorder(trace.NoOpTracerProvider(), "wukong.runtime").start(
        "reconcile Wukong", context=Context(), kind=SpanKind.INTERNAL, attributes={}, start_time=1
    )
    assert not span.is_recording()


def test_processors_get_the_ended_span() -> None:
    provider, kept = _provider(ParentBased(ALWAYS_ON), SpanLimits())
    span = SpanRecorder(provider, "wukong.runtime").start(
        "s", context=Context(), kind=SpanKind.INTERNAL, attributes={"a": 1}, start_time=1
    )
    span.end(end_time=2)
    (ended,) = kept.get_finished_spans()
    assert isinstance(ended, ReadableSpan) and not span.is_recording()
    span.set_attribute("a", 2)  # too late: what was exported does not change
    assert ended.attributes == {"a": 1} and ended.end_time == 2


def test_the_sdks_own_span_metrics_count_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED: started and live spans, counted alike."""
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    counted = []
    for through_recorder in (False, True):
        reader = InMemoryMetricReader()
        provider = TracerProvider(meter_provider=MeterProvider(metric_readers=[reader]))
        start: Any = (
            SpanRecorder(provider, "wukong.runtime").start
            if through_recorder
            else provider.get_tracer("wukong.runtime").start_span
        )
        root = start("r", context=Context(), kind=SpanKind.INTERNAL, attributes={}, start_time=1)
        inside = trace.set_span_in_context(root)
        start("c", context=inside, kind=SpanKind.CLIENT, attributes={}, start_time=2).end()
        start("open", context=inside, kind=SpanKind.CLIENT, attributes={}, start_time=3)
        root.end()
        data = reader.get_metrics_data()
        assert data is not None
        counted.append(
            sorted(
                (metric.name, sorted(point.attributes.items()), point.value)
                for resource in data.resource_metrics
                for scope in resource.scope_metrics
                for metric in scope.metrics
                for point in metric.data.data_points
                if isinstance(point, NumberDataPoint)
            )
        )
    assert counted[0] == counted[1]
    assert ("otel.sdk.span.live", [("otel.span.sampling_result", "RECORD_AND_SAMPLE")], 1) in (
        counted[1]
    )
