"""Reconcile throughput and event-to-reconcile latency of Wukong's runtime.

On a real local control plane (started here, on free ports), N ConfigMaps are
created while a manager with a no-op reconciler watches them. Measured:

- objects/s: N / (time of the last first-reconcile - time of the first create);
- event-to-reconcile latency: reconcile start - create acknowledged, p50/p99.

Peer measured in the same run: a bare watch on the same objects (no cache, no
queue, no workers). Its latency is the floor set by the API server and the
network; the printed ratio is what the runtime adds on top of it.

    .venv/bin/python bench/reconcile_throughput.py [--objects 1000]
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from wukong.devcluster import ControlPlane, ControlPlaneConfig
from wukong.devcluster.processes import free_port
from wukong.runtime.client import Client
from wukong.runtime.context import ReconcileContext, Request, Result
from wukong.runtime.controller import Controller, ControllerOptions
from wukong.runtime.manager import Manager
from wukong.runtime.resources import CONFIGMAPS, NAMESPACES

NAMESPACE = "bench"


class FirstSeen:
    """A no-op reconciler that records when each object was first reconciled."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.all_seen = asyncio.Event()
        self.expected = 0

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        self.first.setdefault(request.name, time.monotonic())
        if len(self.first) >= self.expected:
            self.all_seen.set()
        return Result()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _bare_watch(
    client: Client,
    resource_version: str,
    seen: dict[str, float],
    expected: int,
    ready: asyncio.Event,
) -> None:
    ready.set()
    async for event in client.watch(
        CONFIGMAPS, namespace=NAMESPACE, resource_version=resource_version, timeout_seconds=600
    ):
        if event.type == "ADDED":
            seen.setdefault(event.object["metadata"]["name"], time.monotonic())
            if len(seen) >= expected:
                return


async def run(kubeconfig: Path, objects: int, workers: int, concurrency: int) -> None:
    async with await Client.from_kubeconfig(kubeconfig) as client:
        await client.create(NAMESPACES, {"metadata": {"name": NAMESPACE}})
        reconciler = FirstSeen()
        reconciler.expected = objects
        manager = Manager(client=client, namespace=NAMESPACE)
        manager.add(
            Controller(
                name="bench",
                reconciler=reconciler,
                primary=CONFIGMAPS,
                options=ControllerOptions(max_concurrent_reconciles=workers),
            )
        )
        running = asyncio.create_task(manager.run())
        await manager.informer(CONFIGMAPS).synced.wait()

        listed = await client.list(CONFIGMAPS, namespace=NAMESPACE)
        watched: dict[str, float] = {}
        ready = asyncio.Event()
        async with await Client.from_kubeconfig(kubeconfig) as peer_client:
            peer = asyncio.create_task(
                _bare_watch(
                    peer_client, listed["metadata"]["resourceVersion"], watched, objects, ready
                )
            )
            await ready.wait()

            created: dict[str, float] = {}
            limit = asyncio.Semaphore(concurrency)

            async def create(index: int) -> None:
                name = f"obj-{index:05d}"
                async with limit:
                    await client.create(
                        CONFIGMAPS, {"metadata": {"name": name, "namespace": NAMESPACE}}
                    )
                    created[name] = time.monotonic()

            begin = time.monotonic()
            await asyncio.gather(*(create(i) for i in range(objects)))
            await asyncio.wait_for(reconciler.all_seen.wait(), timeout=600)
            end = max(reconciler.first.values())
            await asyncio.wait_for(peer, timeout=60)
        manager.stop()
        await running

    def latencies(seen: dict[str, float]) -> list[float]:
        return [max(0.0, seen[name] - created[name]) * 1000 for name in created]

    ours, floor = latencies(reconciler.first), latencies(watched)
    rate = objects / (end - begin)
    print(f"objects: {objects}, workers: {workers}, create concurrency: {concurrency}")
    print(f"throughput: {rate:.0f} objects/s (create + watch + queue + reconcile)")
    ours_p50, ours_p99 = _percentile(ours, 0.5), _percentile(ours, 0.99)
    floor_p50, floor_p99 = _percentile(floor, 0.5), _percentile(floor, 0.99)
    row = "{:<34} p50 {:8.1f}   p99 {:8.1f}   mean {:8.1f}"
    print(
        row.format("event-to-reconcile latency (ms):", ours_p50, ours_p99, statistics.fmean(ours))
    )
    print(
        row.format("bare watch latency, peer (ms):", floor_p50, floor_p99, statistics.fmean(floor))
    )
    print(
        f"{'ratio runtime / bare watch:':<34} p50 {ours_p50 / max(floor_p50, 1e-3):8.2f}"
        f"   p99 {ours_p99 / max(floor_p99, 1e-3):8.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16, help="creates in flight")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wukong-bench-") as state:
        plane = ControlPlane(
            ControlPlaneConfig(
                state_dir=Path(state),
                apiserver_port=free_port(),
                etcd_port=free_port(),
                etcd_peer_port=free_port(),
            )
        )
        plane.up(progress=lambda message: print(message, file=sys.stderr))
        try:
            asyncio.run(run(plane.kubeconfig, args.objects, args.workers, args.concurrency))
        finally:
            plane.down(progress=lambda _: None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
