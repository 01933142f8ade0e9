"""Deleting a Wukong: take down what it created, in order, then let it go.

Order: the VirtualMachine first (its disks must not vanish under a running
guest), then claims and DataVolumes, then the NetworkAttachmentDefinitions the
Wukong created (never one it reused), then the finalizer itself.

Seed 004's first bug was a finalizer that waited for dependents that would
never go. Here nothing blocks removal except a VM of ours still shutting
down, and that only for `VM_DELETION_PATIENCE`: a dependent that is already
gone, was never created, or belongs to someone else (another controller uid)
is skipped. Objects are found by label and checked by owner uid, live from the
API server rather than the cache, because a stale cache here would leak them.
"""

import datetime
from dataclasses import dataclass, field

from wukong.operator.api import FINALIZER, WUKONG_LABEL, WUKONGS
from wukong.runtime.apis import DATA_VOLUMES, NETWORK_ATTACHMENT_DEFINITIONS, VIRTUAL_MACHINES
from wukong.runtime.client import Object
from wukong.runtime.context import ReconcileContext
from wukong.runtime.errors import NotFound
from wukong.runtime.owners import is_controlled_by
from wukong.runtime.resources import PERSISTENT_VOLUME_CLAIMS, Resource

# How long a VM we deleted may take to go before its disks are deleted anyway.
VM_DELETION_PATIENCE = 60.0


@dataclass
class FinalizeResult:
    done: bool = False
    waiting: str | None = None
    changes: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)


async def finalize(ctx: ReconcileContext, wukong: Object) -> FinalizeResult:
    result = FinalizeResult()
    metadata = wukong["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    vm = await _get(ctx, VIRTUAL_MACHINES, name, namespace)
    if vm is not None and is_controlled_by(vm, wukong):
        deleting_since = vm["metadata"].get("deletionTimestamp")
        if deleting_since is None:
            await _delete(ctx, VIRTUAL_MACHINES, vm, result)
            result.waiting = f"VirtualMachine {name} is being deleted"
            return result
        if _age(deleting_since) < VM_DELETION_PATIENCE:
            result.waiting = f"VirtualMachine {name} is being deleted"
            return result
        result.warnings.append(
            (
                "VirtualMachineDeletionSlow",
                f"VirtualMachine {name} is still terminating after "
                f"{VM_DELETION_PATIENCE:.0f}s; deleting its disks anyway",
            )
        )
    selector = f"{WUKONG_LABEL}={name}"
    for resource in (DATA_VOLUMES, PERSISTENT_VOLUME_CLAIMS, NETWORK_ATTACHMENT_DEFINITIONS):
        listed = await ctx.client.list(resource, namespace=namespace, label_selector=selector)
        for item in listed.get("items") or []:
            if is_controlled_by(item, wukong) and not item["metadata"].get("deletionTimestamp"):
                await _delete(ctx, resource, item, result)
    finalizers = [f for f in metadata.get("finalizers") or [] if f != FINALIZER]
    patch = {"metadata": {"finalizers": finalizers, "resourceVersion": metadata["resourceVersion"]}}
    try:
        await ctx.client.patch(WUKONGS, name, patch, namespace=namespace)
    except NotFound:
        pass
    result.done = True
    return result


async def _get(
    ctx: ReconcileContext, resource: Resource, name: str, namespace: str
) -> Object | None:
    try:
        return await ctx.client.get(resource, name, namespace=namespace)
    except NotFound:
        return None


async def _delete(
    ctx: ReconcileContext, resource: Resource, obj: Object, result: FinalizeResult
) -> None:
    metadata = obj["metadata"]
    try:
        await ctx.client.delete(resource, metadata["name"], namespace=metadata["namespace"])
    except NotFound:
        return  # already gone: nothing to wait for
    result.changes.append(("Deleted", f"Deleted {resource.kind} {metadata['name']}"))


def _age(timestamp: str) -> float:
    then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (datetime.datetime.now(datetime.UTC) - then).total_seconds()
