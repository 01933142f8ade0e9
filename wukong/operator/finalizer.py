"""Deleting a Wukong: take down what it created, in seed 001's order, then let it go.

Order, one step per reconcile until it is done:

1. the VirtualMachine (its disks must not vanish under a running guest), and
   wait until its VirtualMachineInstance is gone too;
2. DataVolumes and claims;
3. the NetworkAttachmentDefinitions the Wukong created (never one it reused);
4. the finalizer itself.

Seed 004's first bug was a finalizer that waited for dependents that would
never go. Here nothing blocks removal except a VM (or its VMI) of ours still
shutting down, and that only for `VM_DELETION_PATIENCE`; a step that waits
says why (`FinalizeResult.waiting`, an event). A dependent that is already
gone, was never created, belongs to someone else (another controller uid),
or whose API is not served any more (KubeVirt's or CDI's CRDs removed) is
skipped. Objects are found by label and checked by owner uid, live from the
API server rather than the cache, because a stale cache here would leak them.
Every call is bounded by the reconcile's deadline; a deadline that passes
mid-way only means the next reconcile starts again from step 1, which finds
the finished steps' objects gone.
"""

import datetime
from dataclasses import dataclass, field

from wukong.operator.api import FINALIZER, WUKONG_LABEL, WUKONGS
from wukong.runtime import NotFound, Object, ReconcileContext, is_controlled_by
from wukong.runtime.apis import (
    DATA_VOLUMES,
    NETWORK_ATTACHMENT_DEFINITIONS,
    VIRTUAL_MACHINE_INSTANCES,
    VIRTUAL_MACHINES,
)
from wukong.runtime.resources import PERSISTENT_VOLUME_CLAIMS, Resource

# How long after the Wukong's deletion its VM (and instance) may take to go
# before the disks are deleted anyway.
VM_DELETION_PATIENCE = 60.0


@dataclass
class FinalizeResult:
    done: bool = False
    # (reason, message) of the step that is not finished yet.
    waiting: tuple[str, str] | None = None
    changes: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)


async def finalize(ctx: ReconcileContext, wukong: Object) -> FinalizeResult:
    result = FinalizeResult()
    metadata = wukong["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    if not await _virtual_machine_gone(ctx, wukong, result):
        return result
    selector = f"{WUKONG_LABEL}={name}"
    for resource in (DATA_VOLUMES, PERSISTENT_VOLUME_CLAIMS, NETWORK_ATTACHMENT_DEFINITIONS):
        for item in await _list(ctx, resource, namespace=namespace, selector=selector):
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


async def _virtual_machine_gone(
    ctx: ReconcileContext, wukong: Object, result: FinalizeResult
) -> bool:
    """Step 1: delete our VM; True once it and its instance are gone (or took too long)."""
    metadata = wukong["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    vm = await _get(ctx, VIRTUAL_MACHINES, name, namespace)
    ours = vm is not None and is_controlled_by(vm, wukong)
    if vm is not None and ours and not vm["metadata"].get("deletionTimestamp"):
        await _delete(ctx, VIRTUAL_MACHINES, vm, result)
        result.waiting = ("WaitingForVirtualMachine", f"VirtualMachine {name} is being deleted")
        return False
    vmi = await _get(ctx, VIRTUAL_MACHINE_INSTANCES, name, namespace)
    # The instance is ours if its VM is (or was: the VM may be gone already).
    vmi_ours = vmi is not None and (
        ours or (vm is None and _controller_kind(vmi) == VIRTUAL_MACHINES.kind)
    )
    if not ours and not vmi_ours:
        return True
    still = f"VirtualMachine {name}" if ours else f"VirtualMachineInstance {name}"
    # Patience counts from the Wukong's deletion: bounded whatever the VM does.
    if _age(metadata["deletionTimestamp"]) < VM_DELETION_PATIENCE:
        result.waiting = ("WaitingForVirtualMachine", f"{still} is still shutting down")
        return False
    result.warnings.append(
        (
            "VirtualMachineDeletionSlow",
            f"{still} is still terminating after {VM_DELETION_PATIENCE:.0f}s; "
            "deleting its disks anyway",
        )
    )
    return True


def _controller_kind(obj: Object) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("kind"))
    return None


async def _get(
    ctx: ReconcileContext, resource: Resource, name: str, namespace: str
) -> Object | None:
    # NotFound is also the answer when the resource itself is not served (its
    # CRD removed): then there is nothing of that kind to wait for.
    try:
        return await ctx.client.get(resource, name, namespace=namespace)
    except NotFound:
        return None


async def _list(
    ctx: ReconcileContext, resource: Resource, *, namespace: str, selector: str
) -> list[Object]:
    try:
        listed = await ctx.client.list(resource, namespace=namespace, label_selector=selector)
    except NotFound:
        return []  # the API is not served (any more): nothing of it can be left
    return list(listed.get("items") or [])


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
