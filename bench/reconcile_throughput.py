"""Reconcile throughput and event-to-reconcile latency of Wukong's runtime.

On a real local control plane (started here, on free ports), with a no-op
reconciler on ConfigMaps:

1. Event to reconcile: N ConfigMaps are created while a manager runs; latency
   is reconcile start - create sent (p50/p99). Peer in the same run: a bare
   watch on the same objects (no cache, queue or workers), the floor set by
   the API server; the ratio is what the runtime adds.
2. Cold start: a fresh manager reconciles the N existing objects (list, queue,
   workers): objects/s. Peer: one bare list of the same objects.

Both run `--rounds` times, each round in a namespace of its own; a ratio is
taken within each round, and every figure is printed as median (min-max)
over the rounds (a p99 of one round moves with the machine's load).

    .venv/bin/python bench/reconcile_throughput.py [--objects 1000] [--rounds 5]
"""

import argparse
import asyncio
import sys
import time
from pathlib import Path

from results import percentile, spread, write_fragment

from wukong.devcluster import ephemeral_control_plane
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
    namespace: str,
    resource_version: str,
    seen: dict[str, float],
    expected: int,
    ready: asyncio.Event,
) -> None:
    ready.set()
    async for event in client.watch(
        CONFIGMAPS, namespace=namespace, resource_version=resource_version, timeout_seconds=600
    ):
        if event.type == "ADDED":
            seen.setdefault(event.object["metadata"]["name"], time.monotonic())
            if len(seen) >= expected:
                return


def _manager(client: Client, namespace: str, reconciler: FirstSeen, workers: int) -> Manager:
    manager = Manager(client=client, options=ManagerOptions(namespace=namespace))
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
    client: Client,
    peer_client: Client,
    namespace: str,
    *,
    objects: int,
    workers: int,
    concurrency: int,
) -> tuple[list[float], list[float]]:
    """Create objects under a running manager; latencies (ms) of ours and of the bare watch."""
    reconciler = FirstSeen(expected=objects)
    manager = _manager(client, namespace, reconciler, workers)
    running = asyncio.create_task(manager.run())
    await manager.informer(CONFIGMAPS).synced.wait()
    listed = await client.list(CONFIGMAPS, namespace=namespace)
    watched: dict[str, float] = {}
    ready = asyncio.Event()
    resource_version = listed["metadata"]["resourceVersion"]
    peer = asyncio.create_task(
        _bare_watch(peer_client, namespace, resource_version, watched, objects, ready)
    )
    await ready.wait()
    sent: dict[str, float] = {}
    limit = asyncio.Semaphore(concurrency)

    async def create(index: int) -> None:
        name = f"obj-{index:05d}"
        async with limit:
            sent[name] = time.monotonic()  # the event starts when the write is sent
            await client.create(CONFIGMAPS, {"metadata": {"name": name, "namespace": namespace}})

    await asyncio.gather(*(create(i) for i in range(objects)))
    await asyncio.wait_for(reconciler.all_seen.wait(), timeout=600)
    await asyncio.wait_for(peer, timeout=60)
    manager.stop()
    await running

    def latencies(seen: dict[str, float]) -> list[float]:
        return [(seen[name] - sent[name]) * 1000 for name in sent]

    return latencies(reconciler.first), latencies(watched)


async def _cold_start(
    client: Client, namespace: str, *, objects: int, workers: int
) -> tuple[float, float]:
    """Seconds for a fresh manager to reconcile every existing object, and for a bare list."""
    reconciler = FirstSeen(expected=objects)
    manager = _manager(client, namespace, reconciler, workers)
    begin = time.monotonic()
    running = asyncio.create_task(manager.run())
    await asyncio.wait_for(reconciler.all_seen.wait(), timeout=600)
    ours = time.monotonic() - begin
    manager.stop()
    await running
    begin = time.monotonic()
    listed = await client.list(CONFIGMAPS, namespace=namespace)
    bare = time.monotonic() - begin
    assert len(listed["items"]) == objects
    return ours, bare


async def run(kubeconfig: Path, objects: int, workers: int, concurrency: int, rounds: int) -> None:
    figures: dict[str, list[float]] = {}

    def record(name: str, value: float) -> None:
        figures.setdefault(name, []).append(value)

    async with (
        await Client.from_kubeconfig(kubeconfig) as client,
        await Client.from_kubeconfig(kubeconfig) as peer_client,
    ):
        for index in range(rounds):
            print(f"round {index + 1}/{rounds}", file=sys.stderr)
            namespace = f"bench-{index}"
            await client.create(NAMESPACES, {"metadata": {"name": namespace}})
            ours, floor = await _event_latency(
                client,
                peer_client,
                namespace,
                objects=objects,
                workers=workers,
                concurrency=concurrency,
            )
            cold, bare_list = await _cold_start(client, namespace, objects=objects, workers=workers)
            for quantile in (0.5, 0.99):
                ours_ms, floor_ms = percentile(ours, quantile), percentile(floor, quantile)
                record(f"ours p{quantile * 100:.0f}", ours_ms)
                record(f"floor p{quantile * 100:.0f}", floor_ms)
                record(f"ratio p{quantile * 100:.0f}", ours_ms / floor_ms)
            record("ours objects/s", objects / cold)
            record("floor objects/s", objects / bare_list)
            record("ratio cold", cold / bare_list)

    print(f"objects: {objects}, workers: {workers}, create concurrency: {concurrency}")
    print(f"median (min-max) of {rounds} rounds")
    rows = []
    for quantile in ("p50", "p99"):
        rows.append(
            [
                f"event->reconcile {quantile}",
                f"{spread(figures[f'ours {quantile}'], '{:.1f}')} ms",
                f"bare watch {spread(figures[f'floor {quantile}'], '{:.1f}')} ms",
                spread(figures[f"ratio {quantile}"]),
            ]
        )
    rows.append(
        [
            "cold start",
            f"{spread(figures['ours objects/s'], '{:.0f}')} objects/s",
            f"bare list {spread(figures['floor objects/s'], '{:.0f}')} objects/s",
            spread(figures["ratio cold"]),
        ]
    )
    for measure, ours_cell, peer_cell, ratio in rows:
        print(f"  {measure:<22} {ours_cell:<28} {peer_cell:<36} ratio {ratio}")
    write_fragment(
        "reconcile_throughput",
        title=f"Runtime against the API server's floor ({objects} ConfigMaps, {workers} workers)",
        header=["measure", "wukong runtime", "peer", "ratio"],
        rows=rows,
        notes=[
            "Ratios against a bare watch / bare list on the same objects in the same run: "
            "what the cache, queue and workers add. Event->reconcile: the manager and the "
            "bare watch see the same creates at the same time, in one process.",
            f"Median (min-max) of {rounds} rounds, each ratio taken within its round.",
        ],
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16, help="creates in flight")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with ephemeral_control_plane(progress=lambda m: print(m, file=sys.stderr)) as plane:
        asyncio.run(
            run(plane.kubeconfig, args.objects, args.workers, args.concurrency, args.rounds)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
