"""Deleting a Wukong: take down what it created, in order, then let it go.

Order, each step begun only once the ones before it are done:

1. the VirtualMachine (its disks must not vanish under a running guest), and
   wait until it and its VirtualMachineInstance are gone;
2. DataVolumes;
3. claims;
4. the NetworkAttachmentDefinitions the Wukong created (never one it reused);
5. the finalizer itself.

Progress survives a slow API server, one that leaves a reconcile time for
only a few calls. Nothing is started over: what is done is read back from
the informer caches (a dependent whose delete was accepted shows a
`deletionTimestamp`, or is gone) and from what this process remembers of the
deletion (`_Progress`). A reconcile skips the finished steps, issues the
deletes of the first unfinished one and ends; the watch event that shows
them taken (dependents map back to their Wukong through the owner reference)
brings the next reconcile, `RequeueAfter` being only a safety net. A call is
started only while half of the reconcile's time is left (`_take_time`), so
reconciles end whole rather than cut short. Dependents are found in the
caches by their controller's uid (`OWNED_BY`), not by label: a label someone
edited away must not hide one.

Live reads, only where a stale cache would do harm. A cache can lag behind a
create this process made just before the deletion (its watch event still on
the way, or a create whose answer a deadline cut off). Trusting it, the
disks could go under a guest it has not shown yet, or the finalizer could go
while a dependent is left with no owner to delete it (nothing garbage-collects
it in a cluster without kube-controller-manager, and elsewhere the VM would
outlive its disks). Once a cache has shown an object, it follows it to its
end; so a kind is read live only if something the Wukong's spec makes of it
was never shown during the deletion (never created, or not arrived yet: only
the server can tell), and then only once: no create can follow, as a Wukong
being deleted is never converged again and its key is reconciled by one
worker at a time. What the read finds that the cache missed is deleted too.
A deletion of a converged Wukong thus reads nothing live; after a restart,
what is already gone is read once more.

A finalizer that waits for dependents that will never go keeps its object
forever. Here nothing blocks removal except a VM (or its VMI) of ours still
shutting down, and that only for `VM_DELETION_PATIENCE`; a step that waits
says why (`FinalizeResult.waiting`, an event). Each step is an action
(`_delete_virtual_machine`, `_delete_dependents`) that returns what it
found as a `_StepOutcome`; `finalize` alone puts them into its result. Disks and networks are not
waited for once their deletes are accepted (a claim in use elsewhere keeps
its `pvc-protection` finalizer as long as it likes). A dependent that is
already gone, was never created, belongs to someone else (another controller
uid), or whose API is not served any more (KubeVirt's or CDI's CRDs removed)
is skipped. Every delete names the uid it means (`preconditions.uid`): a
stale cache never deletes a same-named replacement.
"""

import datetime
from dataclasses import dataclass, field

from wukong.operator.api import FINALIZER, WUKONG_LABEL, WUKONGS
from wukong.operator.names import is_label_value
from wukong.operator.networks import created_nad_name
from wukong.operator.storage import claim_name
from wukong.operator.views import WukongView
from wukong.operator.writes import remove_finalizer
from wukong.runtime import (
    Conflict,
    EventRecorder,
    NotFound,
    Object,
    ReconcileContext,
    Request,
    Store,
    controller_uid,
    is_controlled_by,
)
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

# Steps 2-4, in order.
_DELETED_AFTER_THE_VM = (DATA_VOLUMES, PERSISTENT_VOLUME_CLAIMS, NETWORK_ATTACHMENT_DEFINITIONS)

# Field index on the dependents' caches: the uid of their controller.
OWNED_BY = "metadata.ownerReferences.controller.uid"


def owner_uid_key(obj: Object) -> list[str]:
    uid = controller_uid(obj)
    return [uid] if uid else []


@dataclass(frozen=True)
class FinalizeResult:
    done: bool = False
    # Stopped for lack of time with work left that no watch event will announce.
    resume: bool = False
    # (reason, message) of the step that waits for something else than its own
    # deletes to show in the caches.
    waiting: tuple[str, str] | None = None
    warnings: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class _StepOutcome:
    """What one deletion step found: whether the next step may begin, and why not."""

    done: bool
    waiting: tuple[str, str] | None = None
    warning: tuple[str, str] | None = None


@dataclass
class _Progress:
    """What this process knows of one Wukong's deletion beyond its caches."""

    uid: str
    # (kind, name) of what the Wukong's spec makes that the caches have shown.
    seen: set[tuple[str, str]] = field(default_factory=set)
    # Kinds read live since the deletion began (see the module docstring).
    confirmed: set[str] = field(default_factory=set)
    # Dependents whose delete the server accepted, before the caches show it.
    deleted: set[str] = field(default_factory=set)


@dataclass(frozen=True, kw_only=True)
class DeletionCaches:
    """The informer stores of what a Wukong creates; those of the kinds deleted in
    steps 2-4 carry the `OWNED_BY` index."""

    virtual_machines: Store
    virtual_machine_instances: Store
    data_volumes: Store
    claims: Store
    network_attachment_definitions: Store


class _OutOfTime(Exception):
    """Less than half of the reconcile's time is left: leave the next call to the next one."""


class Finalizer:
    """Takes a Wukong's dependents down a step at a time, then removes its finalizer."""

    def __init__(self, *, caches: DeletionCaches, recorder: EventRecorder) -> None:
        self._caches = caches
        self._recorder = recorder
        self._progress: dict[Request, _Progress] = {}
        self._stores = {
            VIRTUAL_MACHINES.plural: caches.virtual_machines,
            VIRTUAL_MACHINE_INSTANCES.plural: caches.virtual_machine_instances,
            DATA_VOLUMES.plural: caches.data_volumes,
            PERSISTENT_VOLUME_CLAIMS.plural: caches.claims,
            NETWORK_ATTACHMENT_DEFINITIONS.plural: caches.network_attachment_definitions,
        }

    def forget(self, request: Request) -> None:
        """The Wukong is gone: drop what was remembered of its deletion."""
        self._progress.pop(request, None)

    def observe(self, request: Request, wukong: WukongView) -> None:
        """Note what the caches show of the Wukong's dependents (each deletion reconcile,
        from the first: they go one by one)."""
        self._observe(request, wukong)

    def _observe(self, request: Request, wukong: WukongView) -> _Progress:
        progress = self._progress.get(request)
        if progress is None or progress.uid != wukong.uid:
            progress = self._progress[request] = _Progress(uid=wukong.uid)
        for plural, names in _expected(wukong).items():
            for name in names:
                if self._stores[plural].get_by_name(wukong.namespace, name) is not None:
                    progress.seen.add((plural, name))
        return progress

    async def finalize(self, ctx: ReconcileContext, wukong: WukongView) -> FinalizeResult:
        progress = self._observe(ctx.request, wukong)
        warnings: tuple[tuple[str, str], ...] = ()
        try:
            step = await self._delete_virtual_machine(ctx, wukong, progress)
            warnings = (step.warning,) if step.warning else ()
            if not step.done:
                return FinalizeResult(waiting=step.waiting, warnings=warnings)
            for resource in _DELETED_AFTER_THE_VM:
                if not await self._delete_dependents(ctx, wukong, resource, progress):
                    # Deletes issued: their watch events bring the next reconcile.
                    return FinalizeResult(warnings=warnings)
            _take_time(ctx)
        except _OutOfTime:
            return FinalizeResult(resume=True, warnings=warnings)
        await remove_finalizer(ctx, WUKONGS, wukong, FINALIZER)
        self.forget(ctx.request)
        return FinalizeResult(done=True, warnings=warnings)

    async def _delete_virtual_machine(
        self, ctx: ReconcileContext, wukong: WukongView, progress: _Progress
    ) -> _StepOutcome:
        """Step 1: delete our VM; done once it and its instance are gone (or took too long)."""
        namespace, name = wukong.namespace, wukong.name
        vm = self._caches.virtual_machines.get_by_name(namespace, name)
        vmi = self._caches.virtual_machine_instances.get_by_name(namespace, name)
        ours, vmi_ours = _ours(wukong, vm, vmi)
        if not ours and not vmi_ours:
            # The caches show both gone. If they never showed them, a VM created (or
            # started) just before the deletion may not have reached them yet, and
            # the disks go next: ask the server, once (nothing creates one any more).
            if not _trusted(progress, wukong, VIRTUAL_MACHINES):
                _take_time(ctx)
                vm = await _get(ctx, VIRTUAL_MACHINES, name, namespace)
                ours, _ = _ours(wukong, vm, None)
                if not ours:
                    progress.confirmed.add(VIRTUAL_MACHINES.plural)
            if not ours and not _trusted(progress, wukong, VIRTUAL_MACHINE_INSTANCES):
                _take_time(ctx)
                vmi = await _get(ctx, VIRTUAL_MACHINE_INSTANCES, name, namespace)
                _, vmi_ours = _ours(wukong, None, vmi)
                if not vmi_ours:
                    progress.confirmed.add(VIRTUAL_MACHINE_INSTANCES.plural)
            if not ours and not vmi_ours:
                return _StepOutcome(done=True)
        if ours and vm is not None and not _deleting(vm, progress):
            await self._delete(ctx, wukong, VIRTUAL_MACHINES, vm, progress)
            return _StepOutcome(
                done=False,
                waiting=("WaitingForVirtualMachine", f"VirtualMachine {name} is being deleted"),
            )
        still = f"VirtualMachine {name}" if ours else f"VirtualMachineInstance {name}"
        # Patience counts from the Wukong's deletion: bounded whatever the VM does.
        if _age(wukong.deletion_timestamp or "") < VM_DELETION_PATIENCE:
            return _StepOutcome(
                done=False,
                waiting=("WaitingForVirtualMachine", f"{still} is still shutting down"),
            )
        return _StepOutcome(
            done=True,
            warning=(
                "VirtualMachineDeletionSlow",
                f"{still} is still terminating after {VM_DELETION_PATIENCE:.0f}s; "
                "deleting its disks anyway",
            ),
        )

    async def _delete_dependents(
        self,
        ctx: ReconcileContext,
        wukong: WukongView,
        resource: Resource,
        progress: _Progress,
    ) -> bool:
        """Steps 2-4: delete every `resource` of ours not being deleted yet; True if
        there was none left (the step is done)."""
        pending = [
            item
            for item in self._stores[resource.plural].by_index(OWNED_BY, wukong.uid)
            if not _deleting(item, progress)
        ]
        live = not pending and not _trusted(progress, wukong, resource)
        if live:
            # The cache may have missed a create made just before the deletion; once
            # the finalizer is gone nothing would delete it.
            _take_time(ctx)
            pending = [
                item
                for item in await _list_labelled(ctx, resource, wukong)
                if is_controlled_by(item, wukong.body) and not _deleting(item, progress)
            ]
        for item in pending:
            await self._delete(ctx, wukong, resource, item, progress)
        if live:
            # Only now: a delete cut short would otherwise leave one the cache never saw.
            progress.confirmed.add(resource.plural)
        # Deletes issued: the next step waits for the watch event that shows them.
        return not pending

    async def _delete(
        self,
        ctx: ReconcileContext,
        wukong: WukongView,
        resource: Resource,
        obj: Object,
        progress: _Progress,
    ) -> None:
        metadata = obj["metadata"]
        _take_time(ctx)
        try:
            await ctx.client.delete(
                resource,
                metadata["name"],
                namespace=metadata["namespace"],
                precondition_uid=metadata["uid"],
            )
            deleted_now = True
        except (NotFound, Conflict):
            # Gone already, or replaced by another object of the name (not ours).
            deleted_now = False
        progress.deleted.add(metadata["uid"])
        if deleted_now:
            # Recorded at once: a later cut-off must not lose it (the delete is not redone).
            await self._recorder.record(
                ctx.client,
                wukong.body,
                type="Normal",
                reason="Deleted",
                message=f"Deleted {resource.kind} {metadata['name']}",
            )


def _take_time(ctx: ReconcileContext) -> None:
    """Go on with the next call (and what belongs to it) only while at least half of
    the reconcile's time is left, as much as the client lets one call take.

    Started later, it would likely be cut short by the deadline; a call cut
    short costs its connection, and opening one may take the next reconcile's
    first call longer than its share, when that one is cut short too.
    Stopping in time keeps every reconcile whole on a slow API server.
    """
    if ctx.remaining() < ctx.timeout / 2:
        raise _OutOfTime


def _expected(wukong: WukongView) -> dict[str, set[str]]:
    """Names of what the Wukong's spec makes, by kind: all it may have created."""
    disks, networks = wukong.spec.disks, wukong.spec.networks
    return {
        VIRTUAL_MACHINES.plural: {wukong.name},
        VIRTUAL_MACHINE_INSTANCES.plural: {wukong.name},
        DATA_VOLUMES.plural: {claim_name(wukong, d) for d in disks if d.image},
        PERSISTENT_VOLUME_CLAIMS.plural: {claim_name(wukong, d) for d in disks if not d.image},
        NETWORK_ATTACHMENT_DEFINITIONS.plural: {
            created_nad_name(wukong, n) for n in networks if n.nad_name is None
        },
    }


def _trusted(progress: _Progress, wukong: WukongView, resource: Resource) -> bool:
    """Whether the caches can answer for `resource` without a live read: each of its
    objects the spec makes was shown by them during this deletion (what they showed,
    they follow to its end), or the server was asked already."""
    if resource.plural in progress.confirmed:
        return True
    return all((resource.plural, n) in progress.seen for n in _expected(wukong)[resource.plural])


def _ours(wukong: WukongView, vm: Object | None, vmi: Object | None) -> tuple[bool, bool]:
    """Whether `vm`, and `vmi`, are the Wukong's."""
    ours = vm is not None and is_controlled_by(vm, wukong.body)
    # The instance is ours if its VM is (or was: the VM may be gone already).
    vmi_ours = vmi is not None and (
        ours or (vm is None and _controller_kind(vmi) == VIRTUAL_MACHINES.kind)
    )
    return ours, vmi_ours


def _deleting(obj: Object, progress: _Progress) -> bool:
    metadata = obj["metadata"]
    return bool(metadata.get("deletionTimestamp")) or metadata.get("uid") in progress.deleted


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


async def _list_labelled(
    ctx: ReconcileContext, resource: Resource, wukong: WukongView
) -> list[Object]:
    # The server cannot select by owner; the label is the closest it can (what
    # a Wukong creates carries it), and ownership is checked on what it returns.
    # A name that is no label value (a Wukong stored before the CRD refused
    # such names) cannot select; then the whole namespace is read.
    selector = f"{WUKONG_LABEL}={wukong.name}" if is_label_value(wukong.name) else None
    try:
        listed = await ctx.client.list(
            resource, namespace=wukong.namespace, label_selector=selector
        )
    except NotFound:
        return []  # the API is not served (any more): nothing of it can be left
    return list(listed.get("items") or [])


def _age(timestamp: str) -> float:
    then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (datetime.datetime.now(datetime.UTC) - then).total_seconds()
