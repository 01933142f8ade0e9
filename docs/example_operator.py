"""An operator on Wukong's runtime: every ConfigMap labelled `greet` gets a greeting."""

import asyncio
import logging

from wukong import runtime as rt

CONFIGMAPS = rt.Resource(group="", version="v1", plural="configmaps", kind="ConfigMap")


class Greeter:
    async def reconcile(self, ctx: rt.ReconcileContext, request: rt.Request) -> rt.Result:
        try:  # every call through ctx.client is bounded by the reconcile's deadline
            cm = await ctx.client.get(CONFIGMAPS, request.name, namespace=request.namespace)
        except rt.NotFound:
            return rt.Result()  # deleted meanwhile: nothing to do
        if "greet" not in (cm["metadata"].get("labels") or {}):
            return rt.Result()
        greeting = f"hello, {request.name}"
        if (cm.get("data") or {}).get("greeting") != greeting:
            patch = {"data": {"greeting": greeting}}
            await ctx.client.patch(CONFIGMAPS, request.name, patch, namespace=request.namespace)
            ctx.logger.info("greeted %s", request)
        return rt.Result(requeue_after=300)  # look again later, even without events


def greeter_manager(client: rt.Client, *, namespace: str | None = None) -> rt.Manager:
    manager = rt.Manager(
        client=client, options=rt.ManagerOptions(namespace=namespace, reconcile_timeout=10)
    )
    manager.add(rt.Controller(name="greeter", reconciler=Greeter(), primary=CONFIGMAPS))
    return manager


async def main() -> None:
    async with await rt.Client.from_environment() as client:  # $KUBECONFIG, or in a pod
        manager = greeter_manager(client)
        manager.handle_signals()  # SIGTERM/SIGINT: cancel reconciles in flight, then exit
        await manager.run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(main())
