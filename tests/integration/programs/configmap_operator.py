"""A small operator on ConfigMaps, run as a real process by integration tests.

ConfigMaps whose name starts with `slow` reconcile forever (until cancelled);
the others get an annotation naming the replica that reconciled them. Logs go
to stderr as JSON lines (the project's own format), so tests can read cancel reasons.
"""

import argparse
import asyncio
import logging
import sys

from wukong.runtime import (
    Client,
    Controller,
    ControllerOptions,
    LeaderElectionConfig,
    Manager,
    ManagerOptions,
    ReconcileContext,
    Request,
    Result,
)
from wukong.runtime.resources import CONFIGMAPS
from wukong.tracing.logs import configure_logging

RECONCILED_BY = "test.wukong.dev/reconciled-by"


class ConfigMapReconciler:
    def __init__(self, identity: str) -> None:
        self.identity = identity

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        if request.name.startswith("slow"):
            await asyncio.sleep(3600)
        patch = {"metadata": {"annotations": {RECONCILED_BY: self.identity}}}
        await ctx.client.patch(CONFIGMAPS, request.name, patch, namespace=request.namespace)
        return Result()


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--identity", required=True)
    parser.add_argument("--lease-name")
    parser.add_argument("--reconcile-timeout", type=float, default=120.0)
    parser.add_argument("--shutdown-grace", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    configure_logging(log_format="json", level=logging.DEBUG)

    election = None
    if args.lease_name:
        election = LeaderElectionConfig(
            name=args.lease_name,
            namespace=args.namespace,
            identity=args.identity,
            lease_duration=4.0,
            renew_deadline=3.0,
            retry_period=0.5,
        )
    async with await Client.from_kubeconfig(args.kubeconfig) as client:
        manager = Manager(
            client=client,
            options=ManagerOptions(
                namespace=args.namespace,
                leader_election=election,
                shutdown_grace=args.shutdown_grace,
            ),
        )
        manager.add(
            Controller(
                name="configmap",
                reconciler=ConfigMapReconciler(args.identity),
                primary=CONFIGMAPS,
                options=ControllerOptions(
                    max_concurrent_reconciles=args.workers, reconcile_timeout=args.reconcile_timeout
                ),
            )
        )
        manager.handle_signals()
        reason = await manager.run()
        logging.getLogger("operator").info("manager stopped: reason=%s", reason)
    return 0 if reason == "shutdown" else 2


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
