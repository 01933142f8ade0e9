"""Wukong's runtime as a benchmark peer.

Default: a no-op reconcile of ConfigMaps in one namespace. With
`--status-patch`: BenchObjects, each read from the cache and given one status
merge patch, the work of a real reconcile (capacity and CPU per reconcile).

Same protocol as the other peers: JSON lines on stdout, `{"event": "ready"}`
once caches are synced, `{"event": "reconcile", "name": ...}` when a
reconcile starts (with --status-patch: when it has written), each with `t`
(unix seconds).

    python bench/peers/wukong_peer.py --kubeconfig K --namespace NS [--requeue-after S]
"""

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for bench_objects

from bench_objects import BENCH_OBJECTS

from wukong.runtime import (
    Client,
    Controller,
    ControllerOptions,
    Manager,
    ManagerOptions,
    ReconcileContext,
    Request,
    Result,
    Store,
)
from wukong.runtime.resources import CONFIGMAPS


def emit(event: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({"event": event, "t": time.time(), **fields}) + "\n")
    sys.stdout.flush()


class NoOp:
    def __init__(self, requeue_after: float) -> None:
        self.requeue_after = requeue_after

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        emit("reconcile", name=request.name)
        return Result(requeue_after=self.requeue_after)


class StatusPatcher:
    def __init__(self, cache: Store, tag: str) -> None:
        self.cache = cache
        self.tag = tag

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        obj = self.cache.get(f"{request.namespace}/{request.name}")
        if obj is None:
            return Result()
        status = {"observedBy": self.tag, "observedGeneration": obj["metadata"]["generation"]}
        await ctx.client.patch_status(
            BENCH_OBJECTS, request.name, {"status": status}, namespace=request.namespace
        )
        emit("reconcile", name=request.name)
        return Result()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--requeue-after", type=float, default=0.0)
    parser.add_argument("--status-patch", action="store_true")
    parser.add_argument("--bench-objects", action="store_true", help="no-op on BenchObjects")
    parser.add_argument("--tag", default="wukong")
    parser.add_argument(
        "--no-watch-list", action="store_true", help="initial list in pages, not streamed"
    )
    args = parser.parse_args()
    async with await Client.from_kubeconfig(args.kubeconfig) as client:
        manager = Manager(
            client=client,
            options=ManagerOptions(
                namespace=args.namespace,
                block_warning_seconds=None,
                watch_list=not args.no_watch_list,
            ),
        )
        primary = BENCH_OBJECTS if args.status_patch or args.bench_objects else CONFIGMAPS
        reconciler = (
            StatusPatcher(manager.informer(primary).store, args.tag)
            if args.status_patch
            else NoOp(args.requeue_after)
        )
        manager.add(
            Controller(
                name="bench",
                reconciler=reconciler,
                primary=primary,
                options=ControllerOptions(max_concurrent_reconciles=args.workers),
            )
        )
        manager.handle_signals()
        run = asyncio.create_task(manager.run())
        await manager.informer(primary).synced.wait()
        emit("ready")
        await run


if __name__ == "__main__":
    asyncio.run(main())
