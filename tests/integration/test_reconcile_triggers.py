"""Why did this reconcile run? Triggers on a real API server, in the context, the span
and the metric.

A controller of ConfigMaps that owns Secrets, traced into memory and measured:
a child's creation reconciles its owner and names the child and the owner
mapping; a `RequeueAfter` reconcile names `requeue_after` and links to the
reconcile that asked; three updates of one object while the only worker is
busy make one reconcile with three triggers; the sync period and `enqueue` from
code name themselves; and `wukong_reconcile_triggers_total` counts every
trigger the reconciles saw, by kind.
"""

import asyncio
import collections
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.contract import RECONCILE_SPAN_ATTRIBUTES, RECONCILE_TRIGGERS
from tests.integration.helpers import running
from tests.polling import eventually
from wukong.metrics import RuntimeMetrics
from wukong.runtime import (
    Client,
    Controller,
    Manager,
    ManagerOptions,
    ReconcileContext,
    Request,
    Result,
)
from wukong.runtime.observe import TriggerKind
from wukong.runtime.resources import CONFIGMAPS, SECRETS
from wukong.tracing.spans import ReconcileTracer

CONTROLLER = "why"


class Recorder:
    """Keeps every reconcile's context; `tick` requeues itself once, `blocker` waits
    for `release` while `hold` is set."""

    def __init__(self) -> None:
        self.seen: list[ReconcileContext] = []
        self.hold = False
        self.release = asyncio.Event()

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        self.seen.append(ctx)
        if request.name == "blocker" and self.hold:
            await self.release.wait()
        if request.name == "tick" and len(self.of("tick")) == 1:
            return Result(requeue_after=0.2)
        return Result()

    def of(self, name: str) -> list[ReconcileContext]:
        return [ctx for ctx in self.seen if ctx.request.name == name]


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _span_of(exporter: InMemorySpanExporter, ctx: ReconcileContext) -> ReadableSpan:
    (span,) = [
        s
        for s in exporter.get_finished_spans()
        if (s.attributes or {}).get("wukong.reconcile.id") == ctx.reconcile_id
    ]
    return span


def _attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def _manager(
    client: Client,
    namespace: str,
    provider: TracerProvider,
    reconciler: Recorder,
    **options: Any,
) -> tuple[Manager, RuntimeMetrics]:
    metrics = RuntimeMetrics()
    manager = Manager(
        client=client,
        observers=[metrics, ReconcileTracer(provider=provider)],
        options=ManagerOptions(namespace=namespace, **options),
    )
    manager.add(
        Controller(name=CONTROLLER, reconciler=reconciler, primary=CONFIGMAPS, owns=[SECRETS])
    )
    return manager, metrics


def _metric(metrics: RuntimeMetrics) -> dict[str, float]:
    registry = metrics.metrics.registry
    values = {}
    for trigger in RECONCILE_TRIGGERS:
        value = registry.get_sample_value(
            "wukong_reconcile_triggers_total", {"controller": CONTROLLER, "trigger": trigger}
        )
        assert value is not None, trigger  # every series from the start
        values[trigger] = value
    return values


async def test_children_requeues_and_bursts_name_what_queued_them(
    client: Client,
    namespace: str,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    reconciler = Recorder()
    manager, metrics = _manager(client, namespace, provider, reconciler, sync_period=None)
    informer = manager.informer(CONFIGMAPS)
    for name in ("owner", "tick", "blocker", "burst"):
        await client.create(CONFIGMAPS, {"metadata": {"name": name, "namespace": namespace}})
    owner = await client.get(CONFIGMAPS, "owner", namespace=namespace)
    async with running(manager):
        await eventually(
            lambda: (
                {"owner", "blocker", "burst"} <= {c.request.name for c in reconciler.seen}
                and len(reconciler.of("tick")) == 2
            ),
            what="the first reconciles and tick's requeue",
        )

        # A child's creation reconciles its owner, through its ownerReference.
        child = await client.create(
            SECRETS,
            {
                "metadata": {
                    "name": "child",
                    "namespace": namespace,
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "ConfigMap",
                            "name": "owner",
                            "uid": owner["metadata"]["uid"],
                            "controller": True,
                        }
                    ],
                }
            },
        )
        await eventually(lambda: len(reconciler.of("owner")) == 2, what="the owner's reconcile")

        # Three updates of one object while the only worker is busy: one reconcile.
        reconciler.hold = True
        await client.patch(
            CONFIGMAPS, "blocker", {"metadata": {"labels": {"x": "1"}}}, namespace=namespace
        )
        await eventually(
            lambda: any(c.request.name == "blocker" for c in manager.controllers[0].in_flight()),
            what="the blocker holding the worker",
        )
        versions = []
        for value in ("1", "2", "3"):
            patched = await client.patch(
                CONFIGMAPS, "burst", {"data": {"n": value}}, namespace=namespace
            )
            versions.append(patched["metadata"]["resourceVersion"])

        def burst_cached() -> bool:
            cached = informer.store.get_by_name(namespace, "burst")
            return cached is not None and cached["metadata"]["resourceVersion"] == versions[-1]

        await eventually(burst_cached, what="the third update in the cache")
        reconciler.release.set()
        await eventually(lambda: len(reconciler.of("burst")) == 2, what="the burst's reconcile")
        await eventually(
            lambda: len(exporter.get_finished_spans()) >= len(reconciler.seen),
            what="every reconcile's span",
        )

    # The owner's second reconcile names the child and the owner mapping.
    by_child = reconciler.of("owner")[1]
    (trigger,) = by_child.triggers
    assert (trigger.kind, trigger.event, trigger.mapping) == (TriggerKind.EVENT, "ADDED", "owner")
    assert (trigger.object_kind, trigger.namespace, trigger.name) == ("Secret", namespace, "child")
    assert trigger.resource_version == child["metadata"]["resourceVersion"]
    attributes = _attributes(_span_of(exporter, by_child))
    assert RECONCILE_SPAN_ATTRIBUTES <= attributes.keys()
    assert attributes["wukong.reconcile.trigger"] == "event"
    assert attributes["wukong.reconcile.triggers"] == (
        f"ADDED Secret {namespace}/child rv={trigger.resource_version} via owner",
    )
    assert attributes["wukong.reconcile.trigger_count"] == 1

    # The RequeueAfter reconcile names requeue_after and links to its predecessor.
    first_tick, second_tick = reconciler.of("tick")
    assert [t.kind for t in second_tick.triggers] == [TriggerKind.REQUEUE_AFTER]
    assert second_tick.link is not None
    assert second_tick.link.reconcile_id == first_tick.reconcile_id
    first_span, second_span = _span_of(exporter, first_tick), _span_of(exporter, second_tick)
    assert _attributes(second_span)["wukong.reconcile.trigger"] == "requeue_after"
    assert _attributes(second_span)["wukong.reconcile.triggers"] == (
        f"requeue_after by reconcile {first_tick.reconcile_id}",
    )
    assert [link.context.span_id for link in second_span.links] == [
        first_span.context.span_id  # type: ignore[union-attr]
    ]

    # The burst: one reconcile, three triggers, in order.
    burst = reconciler.of("burst")[1]
    assert burst.trigger_count == 3
    assert [(t.event, t.resource_version, t.mapping) for t in burst.triggers] == [
        ("MODIFIED", version, "primary") for version in versions
    ]
    burst_attributes = _attributes(_span_of(exporter, burst))
    assert burst_attributes["wukong.reconcile.trigger_count"] == 3
    assert len(burst_attributes["wukong.reconcile.triggers"]) == 3

    # The metric counts every trigger the reconciles saw, by kind.
    seen = collections.Counter(str(t.kind) for ctx in reconciler.seen for t in ctx.triggers)
    assert all(ctx.trigger_count == len(ctx.triggers) for ctx in reconciler.seen)
    assert _metric(metrics) == {kind: float(seen[kind]) for kind in RECONCILE_TRIGGERS}
    assert seen["event"] >= 4 + 1 + 1 + 3 and seen["requeue_after"] == 1


async def test_the_sync_period_and_code_name_themselves(
    client: Client,
    namespace: str,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    reconciler = Recorder()
    manager, metrics = _manager(client, namespace, provider, reconciler, sync_period=1.0)
    await client.create(CONFIGMAPS, {"metadata": {"name": "a", "namespace": namespace}})
    async with running(manager):
        await eventually(lambda: len(reconciler.of("a")) >= 1, what="the first reconcile")
        manager.enqueue(CONTROLLER, Request(namespace, "a"), source="webhook")

        def kinds() -> set[TriggerKind]:
            return {t.kind for ctx in reconciler.of("a") for t in ctx.triggers}

        await eventually(
            lambda: {TriggerKind.SYNC_PERIOD, TriggerKind.MANUAL} <= kinds(),
            what="a resync and the manual enqueue",
        )
    resynced = next(
        ctx for ctx in reconciler.of("a") if ctx.triggers[0].kind is TriggerKind.SYNC_PERIOD
    )
    assert str(resynced.triggers[0]).startswith(f"sync_period ConfigMap {namespace}/a rv=")
    assert resynced.triggers[0].mapping == "primary"
    manual = next(ctx for ctx in reconciler.of("a") if ctx.triggers[0].kind is TriggerKind.MANUAL)
    assert str(manual.triggers[0]) == "manual by webhook"
    assert _attributes(_span_of(exporter, manual))["wukong.reconcile.trigger"] == "manual"
    counted = _metric(metrics)
    assert counted["sync_period"] >= 1 and counted["manual"] == 1
