"""Wukong's runtime as a benchmark peer: a no-op reconcile of ConfigMaps in one namespace.

Same protocol as the other peers: JSON lines on stdout, `{"event": "ready"}`
once caches are synced, `{"event": "reconcile", "name": ...}` when a
reconcile starts, each with `t` (unix seconds).

    python bench/peers/wukong_peer.py --kubeconfig K --namespace NS [--requeue-after S]
"""

import argparse
import asyncio
import json
import sys
import time

from wukong.runtime.client import Client
from wukong.runtime.context import ReconcileContext, Request, Result
from wukong.runtime.controller import Controller, ControllerOptions
from wukong.runtime.manager import Manager
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


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--requeue-after", type=float, default=0.0)
    args = parser.parse_args()
    async with await Client.from_kubeconfig(args.kubeconfig) as client:
        manager = Manager(client=client, namespace=args.namespace, block_warning_seconds=None)
        manager.add(
            Controller(
                name="bench",
                reconciler=NoOp(args.requeue_after),
                primary=CONFIGMAPS,
                options=ControllerOptions(max_concurrent_reconciles=args.workers),
            )
        )
        manager.handle_signals()
        run = asyncio.create_task(manager.run())
        await manager.informer(CONFIGMAPS).synced.wait()
        emit("ready")
        await run


if __name__ == "__main__":
    asyncio.run(main())
