"""Namespaces are tenants: deleting one cancels its reconciles in flight, and nothing else."""

import asyncio
import uuid

from tests.integration.helpers import RecordingObserver, running
from tests.polling import eventually
from wukong.metrics import RuntimeMetrics
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
from wukong.runtime.observe import Outcome, Step
from wukong.runtime.resources import CONFIGMAPS, NAMESPACES


class WaitsForRelease:
    """Holds the reconciles of `namespaces` until released, so they are in flight when a
    namespace goes (other namespaces' ConfigMaps, e.g. kube-system's, pass at once)."""

    def __init__(self, *namespaces: str) -> None:
        self.namespaces = namespaces
        self.release = asyncio.Event()
        self.started: set[Request] = set()

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        if request.namespace not in self.namespaces:
            return Result()
        self.started.add(request)
        await self.release.wait()
        return Result()


async def _configmap(client: Client, namespace: str, name: str) -> None:
    await client.create(
        CONFIGMAPS,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}},
        namespace=namespace,
    )


async def test_deleting_a_namespace_cancels_only_its_reconciles(
    client: Client, namespace: str
) -> None:
    other = f"test-{uuid.uuid4().hex[:10]}"
    await client.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}}
    )
    recorder = RecordingObserver()
    reconciler = WaitsForRelease(namespace, other)
    metrics = RuntimeMetrics()
    manager = Manager(
        client=client,
        observers=[recorder, metrics],
        options=ManagerOptions(block_warning_seconds=None),
    )
    manager.add(
        Controller(
            name="tenants",
            reconciler=reconciler,
            primary=CONFIGMAPS,
            options=ControllerOptions(max_concurrent_reconciles=4),
        )
    )
    doomed = [Request(other, "a"), Request(other, "b")]
    kept = [Request(namespace, "c"), Request(namespace, "d")]
    for request in doomed + kept:
        await _configmap(client, request.namespace, request.name)
    async with running(manager):
        await eventually(
            lambda: set(doomed + kept) <= reconciler.started, what="four reconciles in flight"
        )
        await client.delete(NAMESPACES, other)

        def cancelled() -> list[Request]:
            return [e.request for e in recorder.steps(Step.CANCEL_REQUESTED)]

        await eventually(lambda: sorted(cancelled()) == doomed, what="the namespace's cancels")
        await eventually(
            lambda: {e.request for e in recorder.finished()} >= set(doomed),
            what="the cancelled reconciles to end",
        )
        for event in recorder.finished():
            if event.request.namespace not in (namespace, other):
                continue
            assert event.outcome is Outcome.CANCELLED
            assert event.reason is CancelReason.DELETED
            assert event.request in doomed
        # The other namespace's reconciles are untouched, still in flight, and end normally.
        in_flight = {
            ctx.request for controller in manager.controllers for ctx in controller.in_flight()
        }
        assert set(kept) <= in_flight
        reconciler.release.set()
        await eventually(
            lambda: (
                {e.request for e in recorder.finished() if e.outcome is Outcome.SUCCESS}
                >= set(kept)
            ),
            what="the other namespace's reconciles to finish",
        )
    assert (
        sorted(
            e.request
            for e in recorder.steps(Step.CANCEL_REQUESTED)
            if e.reason is CancelReason.DELETED
        )
        == doomed
    )
    # The storming tenant is named among the top namespaces by cancellations; the other,
    # which had none, is not exported.
    registry = metrics.metrics.registry

    def top(tenant: str) -> float | None:
        return registry.get_sample_value(
            "wukong_top_namespace_cancellations_total",
            {"controller": "tenants", "object_namespace": tenant},
        )

    assert (top(other), top(namespace)) == (2, None)
