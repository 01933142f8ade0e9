"""The settings of the reconcile traces' tail sampling, the id generator that
gives a reconcile's span the ids it had while it ran, and admission spans: kept by
the same policy, children of the caller's `traceparent`."""

import asyncio
import datetime
import random

import pytest
from kubernetes_asyncio import client as k8s_client
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tests.running import configmap_controller
from wukong.runtime import CancelReason, Client, ReconcileContext, Request, Result
from wukong.runtime.observe import Outcome, WebhookReview
from wukong.tracing.sampling import KeptTraces, TailSampling, sampled_by_ratio
from wukong.tracing.spans import PresetIds, ReconcileTracer


def test_the_operators_settings_come_from_the_environment() -> None:
    assert TailSampling.from_environ({}) == TailSampling(
        keep_ratio=0.001, slow_share=0.5, keep_every=60.0
    )
    assert TailSampling.from_environ(
        {
            "WUKONG_TRACES_KEEP_RATIO": "0.25",
            "WUKONG_TRACES_SLOW_SHARE": "0.8",
            "WUKONG_TRACES_KEEP_EVERY": "0",
        }
    ) == TailSampling(keep_ratio=0.25, slow_share=0.8, keep_every=0.0)
    with pytest.raises(ValueError, match="between 0 and 1"):
        TailSampling.from_environ({"WUKONG_TRACES_KEEP_RATIO": "1.5"})
    for wrong in ("-1", "inf", "nan"):
        with pytest.raises(ValueError, match="not a number of seconds"):
            TailSampling.from_environ({"WUKONG_TRACES_KEEP_EVERY": wrong})


def _ids_the_ratio_drops(count: int, sampling: TailSampling) -> list[int]:
    ids = random.Random(3)
    dropped: list[int] = []
    while len(dropped) < count:
        trace_id = ids.getrandbits(128)
        if not sampled_by_ratio(trace_id, sampling.bound):
            dropped.append(trace_id)
    return dropped


def _plain(kept: KeptTraces, trace_id: int, controller: str, started: float) -> str | None:
    """Why a reconcile that ended well and in time (1 s of 10) is kept."""
    return kept.why(Outcome.SUCCESS, 1.0, 10.0, trace_id, controller, started)


def test_failures_and_slow_reconciles_are_always_kept() -> None:
    kept = KeptTraces(TailSampling(keep_ratio=0.0, slow_share=0.5, keep_every=60.0))
    (trace_id,) = _ids_the_ratio_drops(1, TailSampling(keep_ratio=0.0))
    assert kept.why(Outcome.CANCELLED, 0.1, 10.0, trace_id, "c", 0.0) == "cancelled"
    assert kept.why(Outcome.ERROR, 0.1, 10.0, trace_id, "c", 0.0) == "error"
    assert kept.why(Outcome.SUCCESS, 5.1, 10.0, trace_id, "c", 0.0) == "slow"
    assert kept.why(Outcome.REQUEUE_AFTER, 4.9, 10.0, trace_id, "c", 0.0) is None


def test_a_controller_gets_a_plain_trace_at_least_every_interval() -> None:
    sampling = TailSampling(keep_ratio=0.001, keep_every=60.0)
    kept = KeptTraces(sampling)
    first, second, third, fourth, other = _ids_the_ratio_drops(5, sampling)
    # Its first reconcile starts the clock; a minute on, the next plain one is kept.
    assert _plain(kept, first, "wukong", 100.0) is None
    assert _plain(kept, second, "wukong", 159.9) is None
    assert _plain(kept, third, "wukong", 160.0) == "interval"
    assert _plain(kept, fourth, "wukong", 200.0) is None  # the next one is due at 220
    # Each controller has its own floor.
    assert _plain(kept, other, "other", 200.0) is None
    # One kept by the ratio meets the floor too: the next is due a minute after it.
    sampled = 1 << 64  # its low 64 bits (0) are below any ratio's bound
    assert _plain(kept, sampled, "wukong", 210.0) == "sampled"
    assert _plain(kept, fourth, "wukong", 260.0) is None
    assert _plain(kept, fourth, "wukong", 270.0) == "interval"


def test_without_a_floor_only_the_ratio_keeps_plain_traces() -> None:
    kept = KeptTraces(TailSampling(keep_ratio=0.5, keep_every=0.0))
    ids = random.Random(11)
    why = [_plain(kept, ids.getrandbits(128), "wukong", float(t)) for t in range(4000)]
    assert set(why) == {"sampled", None}
    assert why.count("sampled") == pytest.approx(2000, abs=200)


class _Done:
    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        return Result()


@pytest.mark.looptime  # a virtual clock: a minute passes in no time
async def test_the_tracer_keeps_a_plain_trace_a_minute_when_the_ratio_keeps_none() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = ReconcileTracer(provider=provider, sampling=TailSampling(0.0, keep_every=60.0))
    async with Client(k8s_client.ApiClient(configuration=k8s_client.Configuration())) as client:
        controller = configmap_controller(_Done(), client, tracer, workers=1)
        controller.start()
        # At 0 s (the clock starts), 30 s, 61 s (due: kept), 62 s and 90 s (not yet).
        for name, wait in (("a", 30), ("b", 31), ("c", 1), ("d", 28), ("e", 1)):
            controller.enqueue(Request("ns", name))
            await asyncio.sleep(wait)
        await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)
    kept = {
        (span.attributes or {})["wukong.object.name"]: (span.attributes or {})["wukong.trace.kept"]
        for span in exporter.get_finished_spans()
        if span.parent is None
    }
    assert kept == {"c": "interval"}


def test_preset_ids_are_handed_out_once_then_the_wrapped_generators() -> None:
    ids = PresetIds()
    ids.preset(0xABC, 0x123)
    assert (ids.generate_trace_id(), ids.generate_span_id()) == (0xABC, 0x123)
    assert ids.generate_trace_id() not in (0, 0xABC)
    assert ids.generate_span_id() not in (0, 0x123)


def test_the_tracer_wraps_a_providers_own_generator() -> None:
    provider = TracerProvider()
    own = provider.id_generator
    ReconcileTracer(provider=provider)
    assert isinstance(provider.id_generator, PresetIds)
    assert provider.id_generator.fallback is own


def _review(
    *, allowed: bool | None = True, reason: str = "Allowed", **extra: object
) -> WebhookReview:
    fields: dict[str, object] = {
        "webhook": "/validate-wukong",
        "uid": "u-1",
        "operation": "CREATE",
        "kind": "Wukong",
        "namespace": "ns",
        "name": "web",
        "started": 1_700_000_000.0,
        "duration": 0.01,
        "timeout": 10.0,
        "deadline": datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC),
        "allowed": allowed,
        "reason": reason,
        "message": "" if allowed else "no such class",
        "code": 200 if allowed is not None else 400,
    }
    fields.update(extra)
    return WebhookReview(**fields)  # type: ignore[arg-type]


def _admission_spans(sampling: TailSampling, *reviews: WebhookReview) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = ReconcileTracer(provider=provider, sampling=sampling)
    for review in reviews:
        tracer.admission_reviewed(review)
    return list(exporter.get_finished_spans())


CALLER_TRACE, CALLER_SPAN = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331


def test_an_admission_continues_the_trace_of_the_callers_traceparent() -> None:
    headers = {"traceparent": f"00-{CALLER_TRACE:032x}-{CALLER_SPAN:016x}-01", "Other": "x"}
    (span,) = _admission_spans(TailSampling(keep_ratio=0.0), _review(headers=headers))
    assert span.context is not None and span.parent is not None
    assert (span.context.trace_id, span.parent.span_id) == (CALLER_TRACE, CALLER_SPAN)
    assert span.parent.is_remote
    attributes = dict(span.attributes or {})
    assert attributes["wukong.trace.kept"] == "caller"
    assert (attributes["k8s.operation"], attributes["wukong.admission.kind"]) == (
        "CREATE",
        "Wukong",
    )
    assert (attributes["k8s.namespace.name"], attributes["wukong.object.name"]) == ("ns", "web")
    assert attributes["url.path"] == "/validate-wukong"
    assert attributes["wukong.admission.allowed"] is True


def test_admissions_are_kept_as_reconciles_are() -> None:
    unsampled = {"traceparent": f"00-{CALLER_TRACE:032x}-{CALLER_SPAN:016x}-00"}
    spans = _admission_spans(
        TailSampling(keep_ratio=0.0, slow_share=0.5),
        _review(),  # allowed, quick, no caller: dropped at ratio 0
        _review(headers=unsampled),  # the caller did not keep its trace either
        _review(allowed=False, reason="StorageClassNotFound", name="denied"),
        _review(allowed=False, reason="Errored", name="errored"),
        _review(allowed=None, reason="Malformed", name=None),
        _review(duration=6.0, name="slow"),
        _review(allowed=False, reason="StorageClassNotFound", name="linked", headers=unsampled),
    )
    kept = {
        (s.attributes or {}).get("wukong.object.name"): (s.attributes or {})["wukong.trace.kept"]
        for s in spans
    }
    assert kept == {
        "denied": "denied",
        "errored": "error",
        None: "error",
        "slow": "slow",
        "linked": "denied",
    }
    # Kept although its caller's trace was not: a trace of its own, linked to the caller.
    linked = next(s for s in spans if (s.attributes or {}).get("wukong.object.name") == "linked")
    assert linked.parent is None
    assert linked.context is not None and linked.context.trace_id != CALLER_TRACE
    assert [(link.context.trace_id, link.context.span_id) for link in linked.links] == [
        (CALLER_TRACE, CALLER_SPAN)
    ]
    errored = next(s for s in spans if (s.attributes or {}).get("wukong.object.name") == "errored")
    assert errored.status.status_code is StatusCode.ERROR


def test_a_plain_admission_is_kept_at_the_ratio_by_its_trace_id() -> None:
    spans = _admission_spans(TailSampling(keep_ratio=0.5), *(_review() for _ in range(2000)))
    assert len(spans) == pytest.approx(1000, abs=200)
    bound = TailSampling(keep_ratio=0.5).bound
    assert all(s.context is not None and sampled_by_ratio(s.context.trace_id, bound) for s in spans)
