"""`wukong diagnose` names a noisy tenant from a real Prometheus scraping a real operator.

A manager reconciles ConfigMaps on a real API server; a quiet namespace's few
ConfigMaps are changed every half second (instant reconciles) from the start,
so Prometheus holds a healthy minute of queue waits: the baseline. Then one
namespace floods the two workers with slow reconciles that ask to run again
at once, and `wukong diagnose` (the command, as an SRE runs it) must name that
namespace as a noisy tenant. The control floods two namespaces evenly: the
queue backs up just as much, and that is no noisy tenant.
"""

import asyncio
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.integration.helpers import running
from wukong.devcluster.prometheus import LocalPrometheus
from wukong.diagnose.live import Target, read_signals
from wukong.diagnose.prometheus import PrometheusAPI
from wukong.diagnose.rules import QUEUE_WAIT_FACTOR, QUEUE_WAIT_FLOOR_MS
from wukong.metrics import MetricsServer, RuntimeMetrics
from wukong.runtime import (
    Client,
    Controller,
    ControllerOptions,
    Manager,
    ManagerOptions,
    ReconcileContext,
    Request,
    Result,
)
from wukong.runtime.resources import CONFIGMAPS, NAMESPACES

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="needs Debian's prometheus"
)

JOB = "wukong"
OPERATOR_NAMESPACE = "wukong-system"  # the operator pod's target label
WINDOW = "20s"
# The noisy namespace's objects: with 2 workers and SLOW s per reconcile, each
# waits ~2.5 s for its turn, far past the queue-wait floor.
FLOODING = 100
SLOW = 0.05
QUIET = 3
WUKONG = Path(sys.executable).with_name("wukong")


class Tenants:
    """Slow and at once requeued in the busy namespaces; instant elsewhere."""

    def __init__(self) -> None:
        self.busy: set[str] = set()

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        if request.namespace not in self.busy:
            return Result()
        await asyncio.sleep(SLOW)
        return Result(requeue_after=0.01)


async def _namespace(client: Client, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    await client.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    return name


async def _configmaps(client: Client, namespace: str, count: int) -> None:
    limit = asyncio.Semaphore(8)

    async def create(index: int) -> None:
        async with limit:
            await client.create(
                CONFIGMAPS,
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{index:03d}"}},
                namespace=namespace,
            )

    await asyncio.gather(*(create(index) for index in range(count)))


async def _touch_forever(client: Client, namespace: str) -> None:
    """Change the quiet namespace's ConfigMaps every half second."""
    sequence = 0
    while True:
        sequence += 1
        for index in range(QUIET):
            await client.patch(
                CONFIGMAPS, f"cm-{index:03d}", {"data": {"seq": str(sequence)}}, namespace=namespace
            )
        await asyncio.sleep(0.5)


def _diagnose(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(WUKONG),
            "diagnose",
            f"--prometheus={url}",
            f"--namespace={OPERATOR_NAMESPACE}",
            f"--job={JOB}",
            f"--window={WINDOW}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


@asynccontextmanager
async def _operator(client: Client, tenants: Tenants) -> AsyncIterator[LocalPrometheus]:
    """The manager, its metrics endpoint and a Prometheus scraping it every second."""
    metrics = RuntimeMetrics()
    manager = Manager(
        client=client, observers=[metrics], options=ManagerOptions(block_warning_seconds=None)
    )
    manager.add(
        Controller(
            name="tenants",
            reconciler=tenants,
            primary=CONFIGMAPS,
            options=ControllerOptions(max_concurrent_reconciles=2),
        )
    )
    server = MetricsServer(registry=metrics.metrics.registry)
    port = await server.start("127.0.0.1:0")
    prometheus = LocalPrometheus(
        targets=[f"127.0.0.1:{port}"], job=JOB, labels={"namespace": OPERATOR_NAMESPACE}
    )
    await asyncio.to_thread(prometheus.start)
    try:
        async with running(manager):
            yield prometheus
    finally:
        await asyncio.to_thread(prometheus.stop)
        await server.stop()


async def _healthy_minute() -> float:
    """Wait past the next minute boundary at least 15 s away (the baseline's per-minute
    points fall on minute boundaries), so one point holds only healthy waits; its time."""
    boundary = (int(time.time() + 15) // 60 + 1) * 60
    await asyncio.sleep(boundary + 2 - time.time())
    return boundary


async def _flood(
    client: Client, tenants: Tenants, prometheus: LocalPrometheus, busy: dict[str, int]
) -> subprocess.CompletedProcess[str]:
    """After a healthy minute, flood the busy namespaces; `wukong diagnose` once the
    window holds only the flood, before the next minute's baseline point sees it."""
    boundary = await _healthy_minute()
    tenants.busy |= set(busy)
    for namespace, count in busy.items():
        await _configmaps(client, namespace, count)
    flooded = time.time()
    await asyncio.sleep(max(0.0, flooded + 22 - time.time()))
    report = await asyncio.to_thread(_diagnose, prometheus.url)
    assert time.time() < boundary + 80, "too slow: the next baseline point saw the flood"
    return report


@asynccontextmanager
async def _quiet_tenant(client: Client) -> AsyncIterator[str]:
    quiet = await _namespace(client, "quiet")
    await _configmaps(client, quiet, QUIET)
    touching = asyncio.create_task(_touch_forever(client, quiet))
    try:
        yield quiet
    finally:
        touching.cancel()
        await asyncio.gather(touching, return_exceptions=True)


async def test_a_namespace_flooding_the_workers_is_named_a_noisy_tenant(client: Client) -> None:
    tenants = Tenants()
    noisy = await _namespace(client, "noisy")
    async with _quiet_tenant(client) as quiet, _operator(client, tenants) as prometheus:
        report = await _flood(client, tenants, prometheus, {noisy: FLOODING})
    out = report.stdout
    print(out)
    assert report.returncode == 1, out + report.stderr
    assert out.startswith(f"diagnosis: noisy_tenant (last {WINDOW})\n  why: namespace {noisy} ran ")
    assert f"kubectl get events -n {noisy}" in out
    shares = next(line for line in out.splitlines() if "reconciles by namespace:" in line)
    assert shares.split(": ")[1].startswith(f"{noisy} "), shares
    assert quiet in shares, shares


async def test_even_load_is_no_noisy_tenant(client: Client) -> None:
    tenants = Tenants()
    busy = {await _namespace(client, "even"): FLOODING // 2 for _ in range(2)}
    async with _quiet_tenant(client), _operator(client, tenants) as prometheus:
        report = await _flood(client, tenants, prometheus, busy)
        signals = await asyncio.to_thread(
            read_signals,
            PrometheusAPI(prometheus.url),
            Target(namespace=OPERATOR_NAMESPACE, job=JOB),
            window=WINDOW,
        )
    out = report.stdout
    print(out)
    assert report.returncode == 0, out + report.stderr
    assert out.startswith(f"diagnosis: healthy (last {WINDOW})\n"), out
    # The queue backed up as much as under a noisy tenant: only the even shares differ.
    threshold = max(QUEUE_WAIT_FLOOR_MS, QUEUE_WAIT_FACTOR * signals.baseline_queue_wait_p99_ms)
    assert signals.queue_wait_p99_ms >= threshold, signals
    assert set(busy) <= set(signals.reconciles_by_namespace), signals
