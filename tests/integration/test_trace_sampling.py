"""Which reconciles keep their trace, on a real API server.

With a keep ratio of 0, every cancelled, failed and slow reconcile is still
exported complete (its span and its API call's span, under it), and no plain
one leaves a single span. With a ratio of 0.25, plain reconciles are kept at
that ratio (within statistical bounds), exactly those whose trace id the rule
keeps, each complete; the ids logs and links saw during the reconcile are the
exported span's. A cancellation that is no failure (the manager stopping) is
kept complete too.
"""

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tests.integration.helpers import RecordingObserver, running
from tests.polling import eventually
from wukong.runtime import (
    CancelReason,
    Client,
    Controller,
    ControllerOptions,
    Manager,
    ManagerOptions,
    ReconcileContext,
    Request,
    Result,
)
from wukong.runtime.observe import Outcome
from wukong.runtime.resources import CONFIGMAPS
from wukong.tracing.sampling import TailSampling, sampled_by_ratio
from wukong.tracing.spans import ReconcileTracer

TIMEOUT = 1.0


class ByName:
    """Each reconcile reads its object, then does what its name's prefix says."""

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        await ctx.client.get(CONFIGMAPS, request.name, namespace=request.namespace)
        if request.name.startswith("cancel"):
            await asyncio.sleep(30)  # past the deadline
        elif request.name.startswith("fail"):
            raise RuntimeError("the reconciler failed")
        elif request.name.startswith("slow"):
            await asyncio.sleep(0.6 * TIMEOUT)  # over half its budget, within it
        return Result()


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


async def _reconcile_all(
    client: Client,
    namespace: str,
    provider: TracerProvider,
    sampling: TailSampling,
    names: list[str],
) -> RecordingObserver:
    recorder = RecordingObserver()
    manager = Manager(
        client=client,
        observers=[recorder, ReconcileTracer(provider=provider, sampling=sampling)],
        options=ManagerOptions(namespace=namespace),
    )
    manager.add(
        Controller(
            name="sampled",
            reconciler=ByName(),
            primary=CONFIGMAPS,
            options=ControllerOptions(max_concurrent_reconciles=8, reconcile_timeout=TIMEOUT),
        )
    )
    for name in names:
        await client.create(CONFIGMAPS, {"metadata": {"name": name, "namespace": namespace}})
    async with running(manager):
        await eventually(
            lambda: {e.request.name for e in recorder.finished()} >= set(names),
            timeout=60,
            what="every object reconciled",
        )
    return recorder


def _by_trace(exporter: InMemorySpanExporter) -> dict[int, list[ReadableSpan]]:
    traces: dict[int, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        assert span.context is not None
        traces.setdefault(span.context.trace_id, []).append(span)
    return traces


def _assert_complete(spans: list[ReadableSpan], ctx: ReconcileContext) -> None:
    """The reconcile's span, with the ids it had while it ran, and its GET under it."""
    (reconcile,) = [s for s in spans if s.name == "reconcile ConfigMap"]
    (get,) = [s for s in spans if s.name == "get configmaps"]
    ids = ctx.span.get_span_context()
    assert reconcile.context is not None
    assert (reconcile.context.trace_id, reconcile.context.span_id) == (ids.trace_id, ids.span_id)
    assert reconcile.parent is None
    assert get.parent is not None and get.parent.span_id == ids.span_id
    assert (reconcile.attributes or {})["wukong.reconcile.id"] == ctx.reconcile_id


async def test_failures_are_never_sampled_out(
    client: Client, namespace: str, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    names = [f"{kind}-{i}" for kind in ("cancel", "fail", "slow", "plain") for i in range(4)]
    recorder = await _reconcile_all(
        client, namespace, provider, TailSampling(keep_ratio=0.0, slow_share=0.5), names
    )

    traces = _by_trace(exporter)
    first = {}
    for event in recorder.finished():
        first.setdefault(event.request.name, event)
    for name, event in first.items():
        trace_id = event.context.span.get_span_context().trace_id
        if name.startswith("plain"):
            assert event.outcome is Outcome.SUCCESS
            assert trace_id not in traces, f"{name} was kept at a ratio of 0"
            continue
        _assert_complete(traces[trace_id], event.context)
        (reconcile,) = [s for s in traces[trace_id] if s.name == "reconcile ConfigMap"]
        attributes = reconcile.attributes or {}
        kept = {"cancel": "cancelled", "fail": "error", "slow": "slow"}[name.split("-")[0]]
        assert attributes["wukong.trace.kept"] == kept
        if kept == "cancelled":
            assert event.outcome is Outcome.CANCELLED
            assert attributes["wukong.cancel.reason"] == "deadline_exceeded"
            assert [e.name for e in reconcile.events] == ["deadline exceeded", "cancelled"]
        elif kept == "error":
            assert event.outcome is Outcome.ERROR
            assert attributes["error.type"] == "RuntimeError"
            assert [e.name for e in reconcile.events] == ["exception"]
        else:
            assert event.outcome is Outcome.SUCCESS
            assert attributes["wukong.reconcile.budget_remaining_ms"] < 0.5 * TIMEOUT * 1000


async def test_plain_reconciles_are_kept_at_the_ratio(
    client: Client, namespace: str, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    sampling = TailSampling(keep_ratio=0.25)
    names = [f"plain-{i}" for i in range(200)]
    recorder = await _reconcile_all(client, namespace, provider, sampling, names)

    traces = _by_trace(exporter)
    finished = recorder.finished()
    assert all(e.outcome is Outcome.SUCCESS for e in finished)
    kept = [e for e in finished if e.context.span.get_span_context().trace_id in traces]
    # Exactly those the trace id rule keeps, each complete, and nothing else exported.
    assert kept == [
        e
        for e in finished
        if sampled_by_ratio(e.context.span.get_span_context().trace_id, sampling.bound)
    ]
    for event in kept:
        _assert_complete(traces[event.context.span.get_span_context().trace_id], event.context)
    assert len(traces) == len(kept)
    # Binomial(n, 0.25): the bounds are four standard deviations away.
    assert 0.25 * len(finished) - 25 <= len(kept) <= 0.25 * len(finished) + 25, len(kept)


async def test_a_reconcile_cancelled_at_shutdown_is_kept_complete(
    client: Client, namespace: str, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """A cancellation that is no failure (the operator stopping) keeps its trace too."""
    provider, exporter = spans
    recorder = RecordingObserver()
    manager = Manager(
        client=client,
        observers=[recorder, ReconcileTracer(provider=provider, sampling=TailSampling(0.0))],
        options=ManagerOptions(namespace=namespace),
    )
    manager.add(
        Controller(
            name="sampled",
            reconciler=ByName(),
            primary=CONFIGMAPS,
            options=ControllerOptions(reconcile_timeout=60.0),
        )
    )
    await client.create(CONFIGMAPS, {"metadata": {"name": "cancel-me", "namespace": namespace}})
    async with running(manager):
        # Its GET has returned: the reconcile sleeps until the manager stops.
        await eventually(
            lambda: any(c.reconcile is not None for c in recorder.calls),
            timeout=30,
            what="the reconcile's GET",
        )
    (event,) = recorder.finished()
    assert (event.outcome, event.reason) == (Outcome.CANCELLED, CancelReason.SHUTDOWN)
    spans_of = _by_trace(exporter)[event.context.span.get_span_context().trace_id]
    _assert_complete(spans_of, event.context)
    (reconcile,) = [s for s in spans_of if s.name == "reconcile ConfigMap"]
    attributes = reconcile.attributes or {}
    assert (attributes["wukong.trace.kept"], attributes["wukong.cancel.reason"]) == (
        "cancelled",
        "shutdown",
    )
    assert reconcile.status.status_code is StatusCode.OK  # a stop the operator chose
