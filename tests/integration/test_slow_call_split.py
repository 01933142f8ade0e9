"""Where a slow API call's time went, split from its joined trace in a real Jaeger.

A control plane of its own traces every request into Jaeger; the operator's
spans go there too. A reconcile creates a ConfigMap while a fault is on:

- a latency proxy between the operator and the API server holds each answer
  (the drill's slow API server): the call's time is outside the server;
- etcd is paused and resumed in bursts (SIGSTOP/SIGCONT) during the create:
  the call's time is in storage, the API server's etcd spans.

`wukong.diagnose.split.slowest_calls` reads both from Jaeger's query API, as
`wukong diagnose --jaeger` does.
"""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from tests.faults import paused_in_bursts
from tests.integration.helpers import running
from tests.polling import eventually
from wukong.devcluster import ControlPlane
from wukong.devcluster.cluster import ETCD
from wukong.devcluster.jaeger import LocalJaeger
from wukong.devcluster.kubeconfig import kubeconfig_via
from wukong.devcluster.latency_proxy import LatencyProxy
from wukong.devcluster.processes import Component, read_pid
from wukong.diagnose.split import OUTSIDE, STORAGE, CallSplit, slowest_calls
from wukong.runtime import (
    Client,
    Controller,
    Manager,
    ManagerOptions,
    ReconcileContext,
    Request,
    Result,
)
from wukong.runtime.resources import CONFIGMAPS, NAMESPACES
from wukong.tracing.sampling import TailSampling
from wukong.tracing.spans import ReconcileTracer

# A cold build of Jaeger (minutes) happens in the fixture's setup.
pytestmark = pytest.mark.timeout(600, func_only=True)

PROXY_DELAY = 0.4
ETCD_PAUSE = 0.25  # each burst: etcd stopped this long...
ETCD_RUN = 0.02  # ...then running this long


@pytest.fixture
async def namespace(traced_plane: ControlPlane) -> AsyncIterator[str]:
    name = f"split-{uuid.uuid4().hex[:8]}"
    async with await Client.from_kubeconfig(traced_plane.kubeconfig) as admin:
        await admin.create(NAMESPACES, {"metadata": {"name": name}})
        await admin.create(CONFIGMAPS, {"metadata": {"name": "target", "namespace": name}})
        yield name
        await admin.delete(NAMESPACES, name)


class CreatesOnce:
    """Creates the ConfigMap `made` in the first reconcile of `target`, under `fault`."""

    def __init__(self, fault: Callable[[], AbstractContextManager[None]] = nullcontext) -> None:
        self.fault = fault
        self.done = asyncio.Event()

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        if request.name == "target" and not self.done.is_set():
            made = {"metadata": {"name": "made", "namespace": request.namespace}}
            with self.fault():
                await ctx.client.create(CONFIGMAPS, made)
            self.done.set()
        return Result()


async def _create_traced(
    client: Client, namespace: str, provider: TracerProvider, reconciler: CreatesOnce
) -> int:
    """Run the reconcile that creates `made`; when it started (epoch microseconds)."""
    started_us = time.time_ns() // 1000
    manager = Manager(
        client=client,
        observers=[ReconcileTracer(provider=provider, sampling=TailSampling(keep_ratio=1.0))],
        options=ManagerOptions(namespace=namespace),
    )
    manager.add(Controller(name="split", reconciler=reconciler, primary=CONFIGMAPS))
    async with running(manager):
        await asyncio.wait_for(reconciler.done.wait(), timeout=60)
    await asyncio.to_thread(provider.force_flush)
    return started_us


async def _split_of_the_create(jaeger: LocalJaeger, service: str, since_us: int) -> CallSplit:
    """The create's split, once the operator's and the server's spans are both in."""
    found: list[CallSplit] = []

    def joined() -> bool:
        nonlocal found
        found = [
            call
            for call in slowest_calls(jaeger, service=service, start_us=since_us, top=10)
            if call.call == "create configmaps"
        ]
        return bool(found) and found[0].server_span is not None

    await eventually(joined, timeout=30, what="the create's joined trace")
    print(found[0].describe())
    return found[0]


async def test_a_latency_proxy_shows_as_time_outside_the_server(
    jaeger: LocalJaeger,
    traced_plane: ControlPlane,
    namespace: str,
    operator_tracing: tuple[TracerProvider, str],
    tmp_path: Path,
) -> None:
    provider, service = operator_tracing
    proxy = LatencyProxy(target_host="127.0.0.1", target_port=traced_plane.config.apiserver_port)
    await proxy.start()
    try:
        kubeconfig = kubeconfig_via(
            traced_plane.kubeconfig, tmp_path / "proxied.kubeconfig", port=proxy.port
        )
        proxy.delay = PROXY_DELAY
        async with await Client.from_kubeconfig(kubeconfig) as client:
            since = await _create_traced(client, namespace, provider, CreatesOnce())
    finally:
        await proxy.close()
    split = await _split_of_the_create(jaeger, service, since)
    assert split.total_ms >= 1000 * PROXY_DELAY, split.describe()
    assert split.dominant == OUTSIDE, split.describe()
    assert split.outside_ms >= 1000 * PROXY_DELAY * 0.9, split.describe()


async def test_a_paused_etcd_shows_as_time_in_storage(
    jaeger: LocalJaeger,
    traced_plane: ControlPlane,
    namespace: str,
    operator_tracing: tuple[TracerProvider, str],
) -> None:
    provider, service = operator_tracing
    etcd = read_pid(Component(name=ETCD, state_dir=traced_plane.config.state_dir))
    assert etcd is not None, "etcd of the traced control plane is not running"

    def etcd_paused_in_bursts() -> AbstractContextManager[None]:
        return paused_in_bursts(etcd, pause=ETCD_PAUSE, run=ETCD_RUN)

    async with await Client.from_kubeconfig(traced_plane.kubeconfig) as client:
        since = await _create_traced(
            client, namespace, provider, CreatesOnce(etcd_paused_in_bursts)
        )
    split = await _split_of_the_create(jaeger, service, since)
    assert split.dominant == STORAGE, split.describe()
    assert split.storage_ms > split.outside_ms + split.admission_ms + split.server_other_ms, (
        split.describe()
    )
