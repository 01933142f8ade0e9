"""Reconcile throughput and event-to-reconcile latency of Wukong's runtime.

On a real local control plane (started here, on free ports), with a no-op
reconciler on ConfigMaps:

1. Event to reconcile: N ConfigMaps are created while a manager runs; latency
   is reconcile start - create sent (p50/p99). Peer in the same run: a bare
   watch on the same objects (no cache, queue or workers), the floor set by
   the API server; the ratio is what the runtime adds.
2. Cold start: a fresh manager reconciles the N existing objects (list, queue,
   workers): objects/s. Peer: one bare list of the same objects.

    .venv/bin/python bench/reconcile_throughput.py [--objects 1000]
"""

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from results import percentile, write_fragment

from wukong.devcluster import ephemeral_control_plane
from wukong.runtime import (
    Client,
    Controller,
    ControllerOptions,
    Manager,
    ReconcileContext,
    Request,
    Result,
)
from wukong.runtime.resources import CONFIGMAPS, NAMESPACES

NAMESPACE = "bench"


class FirstSeen:
    """A no-op reconciler that records when each object was first reconciled."""

    def __init__(self, *, expected: int) -> None:
        self.first: dict[str, float] = {}
        self.all_seen = asyncio.Event()
        self.expected = expected

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        self.first.setdefault(request.name, time.monotonic())
        if len(self.first) >= self.expected:
            self.all_seen.set()
        return Result()


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


def _manager(client: Client, reconciler: FirstSeen, workers: int) -> Manager:
    manager = Manager(client=client, namespace=NAMESPACE)
    manager.add(
        Controller(
            name="bench",
            reconciler=reconciler,
            primary=CONFIGMAPS,
            options=ControllerOptions(max_concurrent_reconciles=workers),
        )
    )
    return manager


async def _event_latency(
    client: Client, peer_client: Client, objects: int, workers: int, concurrency: int
) -> tuple[list[float], list[float]]:
    """Create objects under a running manager; latencies (ms) of ours and of the bare watch."""
    reconciler = FirstSeen(expected=objects)
    manager = _manager(client, reconciler, workers)
    running = asyncio.create_task(manager.run())
    await manager.informer(CONFIGMAPS).synced.wait()
    listed = await client.list(CONFIGMAPS, namespace=NAMESPACE)
    watched: dict[str, float] = {}
    ready = asyncio.Event()
    peer = asyncio.create_task(
        _bare_watch(peer_client, listed["metadata"]["resourceVersion"], watched, objects, ready)
    )
    await ready.wait()
    sent: dict[str, float] = {}
    limit = asyncio.Semaphore(concurrency)

    async def create(index: int) -> None:
        name = f"obj-{index:05d}"
        async with limit:
            sent[name] = time.monotonic()  # the event starts when the write is sent
            await client.create(CONFIGMAPS, {"metadata": {"name": name, "namespace": NAMESPACE}})

    await asyncio.gather(*(create(i) for i in range(objects)))
    await asyncio.wait_for(reconciler.all_seen.wait(), timeout=600)
    await asyncio.wait_for(peer, timeout=60)
    manager.stop()
    await running

    def latencies(seen: dict[str, float]) -> list[float]:
        return [(seen[name] - sent[name]) * 1000 for name in sent]

    return latencies(reconciler.first), latencies(watched)


async def _cold_start(client: Client, objects: int, workers: int) -> tuple[float, float]:
    """Seconds for a fresh manager to reconcile every existing object, and for a bare list."""
    reconciler = FirstSeen(expected=objects)
    manager = _manager(client, reconciler, workers)
    begin = time.monotonic()
    running = asyncio.create_task(manager.run())
    await asyncio.wait_for(reconciler.all_seen.wait(), timeout=600)
    ours = time.monotonic() - begin
    manager.stop()
    await running
    begin = time.monotonic()
    listed = await client.list(CONFIGMAPS, namespace=NAMESPACE)
    bare = time.monotonic() - begin
    assert len(listed["items"]) == objects
    return ours, bare


async def run(kubeconfig: Path, objects: int, workers: int, concurrency: int) -> None:
    async with (
        await Client.from_kubeconfig(kubeconfig) as client,
        await Client.from_kubeconfig(kubeconfig) as peer_client,
    ):
        await client.create(NAMESPACES, {"metadata": {"name": NAMESPACE}})
        ours, floor = await _event_latency(client, peer_client, objects, workers, concurrency)
        cold, bare_list = await _cold_start(client, objects, workers)

    print(f"objects: {objects}, workers: {workers}, create concurrency: {concurrency}")
    print("event to reconcile (write sent -> reconcile started), on a running manager:")
    ours_p50, ours_p99 = percentile(ours, 0.5), percentile(ours, 0.99)
    floor_p50, floor_p99 = percentile(floor, 0.5), percentile(floor, 0.99)
    row = "  {:<28} p50 {:8.1f} ms   p99 {:8.1f} ms   mean {:8.1f} ms"
    print(row.format("wukong runtime:", ours_p50, ours_p99, statistics.fmean(ours)))
    print(row.format("bare watch (peer):", floor_p50, floor_p99, statistics.fmean(floor)))
    print(
        f"  {'ratio runtime / bare watch:':<28} p50 {ours_p50 / floor_p50:8.2f}"
        f"      p99 {ours_p99 / floor_p99:8.2f}"
    )
    print("cold start (list + queue + reconcile every existing object):")
    print(f"  wukong runtime: {cold:.2f} s = {objects / cold:.0f} objects/s")
    print(f"  bare list (peer): {bare_list:.2f} s = {objects / bare_list:.0f} objects/s")
    print(f"  ratio runtime / bare list: {cold / bare_list:.2f}")
    write_fragment(
        "reconcile_throughput",
        title=f"Runtime against the API server's floor ({objects} ConfigMaps, {workers} workers)",
        header=["measure", "wukong runtime", "peer", "ratio"],
        rows=[
            [
                "event->reconcile p50",
                f"{ours_p50:.1f} ms",
                f"bare watch {floor_p50:.1f} ms",
                f"{ours_p50 / floor_p50:.2f}",
            ],
            [
                "event->reconcile p99",
                f"{ours_p99:.1f} ms",
                f"bare watch {floor_p99:.1f} ms",
                f"{ours_p99 / floor_p99:.2f}",
            ],
            [
                "cold start",
                f"{objects / cold:.0f} objects/s",
                f"bare list {objects / bare_list:.0f} objects/s",
                f"{cold / bare_list:.2f}",
            ],
        ],
        notes=[
            "Ratios against a bare watch / bare list on the same objects in the same run: "
            "what the cache, queue and workers add."
        ],
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16, help="creates in flight")
    args = parser.parse_args()
    with ephemeral_control_plane(progress=lambda m: print(m, file=sys.stderr)) as plane:
        asyncio.run(run(plane.kubeconfig, args.objects, args.workers, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
