"""The Wukong reconciler: its steps in order, non-blocking and idempotent.

    finalizer -> initial status -> validate -> networks -> disks ->
    VirtualMachine -> status from the VMI (and a live migration) ->
    conditions, phase and events

The first reconcile writes `phase: Pending`, `observedGeneration` and the
three conditions as `Unknown` before any dependent exists, so a new Wukong
never shows an empty status. An API failure on the way (other than a
conflict or a cancellation) is written to `Ready` as `ReconcileError` with the
server's message, phase `Error`, before the error is raised for a retry: a
stale `Running` would lie.

Each step reads the informers' caches and creates what is missing under a
deterministic name, so a reconcile cancelled at any point (deadline, shutdown)
is simply run again: an object created just before the cancellation is found
(or met as AlreadyExists) next time, never created twice. Nothing waits in
place: a step that is not done yet says what it waits for, and the watch on
owned objects (or `RequeueAfter` as a safety net) brings the next reconcile.

The Wukong is read once per reconcile into a `WukongView` (and again only
after the controller's own write of it); the steps work on that view, and
every status's conditions are built by `conditions.updated_conditions`.
"""

import logging
from dataclasses import dataclass
from typing import Any, Literal

from wukong.operator.api import FINALIZER, WUKONGS, NetworkStatus, Phase, VolumeStatus
from wukong.operator.conditions import (
    NETWORKS_CONFIGURED,
    READY,
    VOLUMES_BOUND,
    ConditionUpdate,
    updated_conditions,
)
from wukong.operator.dispatch import dispatch_stored
from wukong.operator.finalizer import DeletionCaches, Finalizer
from wukong.operator.kubevirt import (
    GuestStatus,
    OwnedGuest,
    active_migration,
    desired_spec,
    ensure_virtual_machine,
    guest_status,
    owned_guest,
)
from wukong.operator.names import name_problem
from wukong.operator.networks import ensure_networks
from wukong.operator.schema import to_json
from wukong.operator.steps import Problem, StepResult
from wukong.operator.storage import DiskReconciler
from wukong.operator.validation import SpecProblems, validate
from wukong.operator.views import WukongView, parse_wukong
from wukong.operator.writes import add_finalizer, write_status
from wukong.runtime import (
    ApiError,
    Conflict,
    EventRecorder,
    Object,
    ReconcileContext,
    Request,
    Result,
    Store,
)

log = logging.getLogger(__name__)

# A problem needs a person; look again now and then in case one acted
# elsewhere (created the StorageClass, say), which no watch of ours would see.
PROBLEM_RETRY_SECONDS = 15.0
# Progress normally arrives through watches; this is only the safety net.
WAITING_RETRY_SECONDS = 10.0
VM_DELETION_RETRY_SECONDS = 2.0
# A deletion that stopped for lack of time goes on at once (no backoff: nothing failed).
DELETION_RESUME_SECONDS = 0.01
_DELETING_MESSAGE = "deleting the VM, its disks and networks"


@dataclass(frozen=True, kw_only=True)
class Caches:
    """The informer stores the reconciler reads."""

    wukongs: Store
    network_attachment_definitions: Store
    claims: Store
    data_volumes: Store
    storage_classes: Store
    virtual_machines: Store
    virtual_machine_instances: Store
    virtual_machine_instance_migrations: Store


# Field index on VirtualMachineInstanceMigrations: `namespace/spec.vmiName`.
MIGRATIONS_BY_VMI = "spec.vmiName"


def migration_vmi_key(migration: Object) -> list[str]:
    name = (migration.get("spec") or {}).get("vmiName")
    return [f"{migration['metadata']['namespace']}/{name}"] if name else []


class WukongReconciler:
    def __init__(self, *, caches: Caches, recorder: EventRecorder) -> None:
        self._caches = caches
        self._recorder = recorder
        self._disks = DiskReconciler(
            claims=caches.claims,
            data_volumes=caches.data_volumes,
            storage_classes=caches.storage_classes,
        )
        self._finalizer = Finalizer(
            caches=DeletionCaches(
                virtual_machines=caches.virtual_machines,
                virtual_machine_instances=caches.virtual_machine_instances,
                data_volumes=caches.data_volumes,
                claims=caches.claims,
                network_attachment_definitions=caches.network_attachment_definitions,
            ),
            recorder=recorder,
        )

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        # A Wukong gone from the cache left nothing of ours behind (finalizer).
        return await dispatch_stored(
            ctx,
            request,
            cache=self._caches.wukongs,
            parse=parse_wukong,
            converge=self._converge,
            delete=self._delete,
            gone=self._finalizer.forget,
        )

    async def _converge(self, ctx: ReconcileContext, wukong: WukongView) -> Result:
        if not wukong.has_finalizer:
            wukong = await self._add_finalizer(ctx, wukong)
        if not wukong.status.phase:
            await self._write_status(ctx, wukong, _initial_status(wukong))
            return Result(requeue=True)
        try:
            return await self._converge_steps(ctx, wukong)
        except Conflict:
            raise
        except ApiError as exc:
            await self._report_error(ctx, wukong, exc)
            raise

    async def _converge_steps(self, ctx: ReconcileContext, wukong: WukongView) -> Result:
        namespace, name = wukong.namespace, wukong.name
        invalid = validate(wukong.spec)
        if (unfit := name_problem(wukong)) is not None:
            # No derived name would be valid: create nothing, say why.
            invalid = SpecProblems(networks=Problem(*unfit), disks=Problem(*unfit))
        networks = (
            StepResult[NetworkStatus](problem=invalid.networks)
            if invalid.networks
            else await ensure_networks(
                ctx, wukong, nads=self._caches.network_attachment_definitions
            )
        )
        volumes = (
            StepResult[VolumeStatus](problem=invalid.disks)
            if invalid.disks
            else await self._disks.ensure(ctx, wukong)
        )
        changes = [*networks.changes, *volumes.changes]
        own = self._own_guest(wukong)
        problem = networks.problem or volumes.problem or own.conflict
        lost = _lost_guest(wukong, own.vm)
        vm_exists = own.vm is not None
        if problem is None and networks.ready and volumes.ready:
            spec = desired_spec(wukong, networks=networks.statuses, volumes=volumes.statuses)
            outcome = await ensure_virtual_machine(ctx, wukong, own.vm, spec)
            changes += outcome.changes
            problem = outcome.problem
            vm_exists = vm_exists or problem is None
        guest = guest_status(own.vmi)
        if problem is None:
            problem = _guest_problem(guest)
        migrations = (
            self._caches.virtual_machine_instance_migrations.by_index(
                MIGRATIONS_BY_VMI, f"{namespace}/{name}"
            )
            if own.vmi is not None
            else []
        )
        status = _status(
            wukong,
            networks=networks,
            volumes=volumes,
            problem=problem,
            vm_name=name if vm_exists else None,
            guest=guest,
            migration=active_migration(own.vmi, migrations),
        )
        await self._write_status(ctx, wukong, status)
        for reason, message in changes:
            await self._event(ctx, wukong, "Normal", reason, message)
        for warning in (lost, problem, networks.degraded, volumes.degraded):
            if warning is not None:
                await self._event(ctx, wukong, "Warning", warning.reason, warning.message)
        if problem is not None or networks.degraded or volumes.degraded:
            return Result(requeue_after=PROBLEM_RETRY_SECONDS)
        old_phase = wukong.status.phase
        if status["phase"] == Phase.MIGRATING:
            return Result(requeue_after=WAITING_RETRY_SECONDS)
        if status["phase"] == Phase.RUNNING:
            if old_phase != Phase.RUNNING:
                message = f"VM running on node {guest.node_name}"
                await self._event(ctx, wukong, "Normal", "Running", message)
            return Result()
        return Result(requeue_after=WAITING_RETRY_SECONDS)

    async def _delete(self, ctx: ReconcileContext, wukong: WukongView) -> Result:
        if not wukong.has_finalizer:
            return Result()
        self._finalizer.observe(ctx.request, wukong)
        if wukong.status.phase != Phase.DELETING:
            conditions = updated_conditions(
                wukong.conditions,
                [ConditionUpdate(READY, False, "Deleting", _DELETING_MESSAGE)],
                observed_generation=wukong.generation,
            )
            await self._write_status(
                ctx, wukong, {"phase": Phase.DELETING.value, "conditions": conditions}
            )
            # A step of its own: the Wukong's watch event brings the next reconcile.
            return Result(requeue_after=VM_DELETION_RETRY_SECONDS)
        outcome = await self._finalizer.finalize(ctx, wukong)
        for reason, message in outcome.warnings:
            await self._event(ctx, wukong, "Warning", reason, message)
        if outcome.done:
            ctx.logger.info("finalized %s", ctx.request)
            return Result()
        if outcome.waiting is not None:
            await self._event(ctx, wukong, "Normal", *outcome.waiting)
        if outcome.resume:
            ctx.logger.debug("deletion goes on in the next reconcile")
            return Result(requeue_after=DELETION_RESUME_SECONDS)
        ctx.logger.debug("deletion waits: %s", outcome.waiting or "for its deletes to show")
        return Result(requeue_after=VM_DELETION_RETRY_SECONDS)

    async def _event(
        self,
        ctx: ReconcileContext,
        wukong: WukongView,
        type: Literal["Normal", "Warning"],
        reason: str,
        message: str,
    ) -> None:
        await self._recorder.record(
            ctx.client, wukong.body, type=type, reason=reason, message=message
        )

    def _own_guest(self, wukong: WukongView) -> OwnedGuest:
        namespace, name = wukong.namespace, wukong.name
        return owned_guest(
            wukong,
            self._caches.virtual_machines.get_by_name(namespace, name),
            self._caches.virtual_machine_instances.get_by_name(namespace, name),
        )

    async def _report_error(
        self, ctx: ReconcileContext, wukong: WukongView, error: ApiError
    ) -> None:
        conditions = updated_conditions(
            wukong.conditions,
            [ConditionUpdate(READY, False, "ReconcileError", str(error))],
            observed_generation=wukong.generation,
        )
        # The node and addresses stay those of an instance of its own, if any: a VM
        # that vanished and cannot be made again (KubeVirt gone) names no node.
        own = self._own_guest(wukong)
        guest = guest_status(own.vmi)
        status = {
            "phase": Phase.ERROR.value,
            "conditions": conditions,
            # Said lost once: the next error names no VM to lose.
            "vmName": wukong.name if own.vm is not None else None,
            "nodeName": guest.node_name,
            "ipAddresses": guest.ip_addresses or None,
        }
        try:
            await self._write_status(ctx, wukong, status)
            if (lost := _lost_guest(wukong, own.vm)) is not None:
                await self._event(ctx, wukong, "Warning", lost.reason, lost.message)
        except ApiError as exc:
            # The server that just failed may fail this too; the retry will tell.
            ctx.logger.debug("could not report %s in status: %s", error, exc)

    async def _add_finalizer(self, ctx: ReconcileContext, wukong: WukongView) -> WukongView:
        return parse_wukong(await add_finalizer(ctx, WUKONGS, wukong, FINALIZER))

    async def _write_status(
        self, ctx: ReconcileContext, wukong: WukongView, status: dict[str, Any]
    ) -> None:
        await write_status(ctx, WUKONGS, wukong, status)


def _initial_status(wukong: WukongView) -> dict[str, Any]:
    conditions = updated_conditions(
        wukong.conditions,
        [
            ConditionUpdate(type, None, "Reconciling", "not observed yet")
            for type in (NETWORKS_CONFIGURED, VOLUMES_BOUND, READY)
        ],
        observed_generation=wukong.generation,
    )
    return {
        "phase": Phase.PENDING.value,
        "observedGeneration": wukong.generation,
        "conditions": conditions,
    }


def _lost_guest(wukong: WukongView, vm: Object | None) -> Problem | None:
    """The VM the status names is gone (deleted by hand, lost with KubeVirt's objects):
    said once, as the status that follows names no node and the VM is made again."""
    if vm is not None or not wukong.status.vm_name:
        return None
    where = f" (last on node {wukong.status.node_name})" if wukong.status.node_name else ""
    return Problem(
        "VirtualMachineLost",
        f"VirtualMachine {wukong.status.vm_name} and its instance are gone{where}; "
        "its node and addresses are cleared until it runs again",
    )


def _guest_problem(guest: GuestStatus) -> Problem | None:
    if guest.phase == "Failed":
        return Problem(
            "VirtualMachineFailed", f"the VM failed: {guest.reason or 'no reason given'}"
        )
    if guest.phase == "Unknown":
        # KubeVirt: "the state of the VirtualMachineInstance could not be
        # obtained, typically due to an error in communicating with the host".
        return Problem(
            "VirtualMachineUnknown",
            f"the VM's state cannot be obtained from node {guest.node_name or 'unknown'}: "
            f"{guest.reason or 'no reason given'}",
        )
    return None


def _status(
    wukong: WukongView,
    *,
    networks: StepResult[NetworkStatus],
    volumes: StepResult[VolumeStatus],
    problem: Problem | None,
    vm_name: str | None,
    guest: GuestStatus,
    migration: dict[str, Any] | None,
) -> dict[str, Any]:
    count = len(networks.statuses)
    if networks.problem:
        networks_condition = ConditionUpdate(
            NETWORKS_CONFIGURED, False, networks.problem.reason, networks.problem.message
        )
    else:
        networks_condition = ConditionUpdate(
            NETWORKS_CONFIGURED, True, "NetworksReady", f"{count} network(s) configured"
        )
    count = len(volumes.statuses)
    if (shown := volumes.problem or volumes.degraded) is not None:
        volumes_condition = ConditionUpdate(VOLUMES_BOUND, False, shown.reason, shown.message)
    elif volumes.waiting:
        volumes_condition = ConditionUpdate(
            VOLUMES_BOUND, False, "WaitingForVolumes", volumes.waiting
        )
    else:
        volumes_condition = ConditionUpdate(
            VOLUMES_BOUND, True, "VolumesReady", f"{count} disk(s) ready"
        )

    running_wanted = wukong.spec.running
    if problem is not None:
        phase, reason, message = Phase.ERROR, problem.reason, problem.message
    elif migration is not None and guest.phase == "Running":
        phase, reason = Phase.MIGRATING, "Migrating"
        target = migration["targetNode"] or "a node not chosen yet"
        message = f"live migration {migration['name']} from {guest.node_name} to {target}"
    elif guest.phase == "Running" and running_wanted:
        phase, reason = Phase.RUNNING, "Running"
        message = f"running on {guest.node_name}"
    elif not running_wanted and vm_name is not None:
        phase, reason, message = Phase.PENDING, "Stopped", "spec.running is false"
    elif vm_name is None:
        phase, reason = Phase.PENDING, "WaitingForVolumes"
        message = volumes.waiting or "waiting for networks and disks"
    else:
        phase, reason = Phase.CREATING, "VirtualMachineStarting"
        message = f"VirtualMachineInstance is {guest.phase or 'not created yet'}"
    # The guest keeps running while it migrates.
    ready_condition = ConditionUpdate(
        READY, phase in (Phase.RUNNING, Phase.MIGRATING), reason, message
    )
    return {
        "phase": phase.value,
        # Lists are replaced whole by the merge patch: their entries need no nulls.
        "networks": to_json(networks.statuses),
        "volumes": to_json(volumes.statuses),
        "vmName": vm_name,
        "nodeName": guest.node_name,
        "migration": migration if phase == Phase.MIGRATING else None,
        "ipAddresses": guest.ip_addresses or None,
        "observedGeneration": wukong.generation,
        "conditions": updated_conditions(
            wukong.conditions,
            [networks_condition, volumes_condition, ready_condition],
            observed_generation=wukong.generation,
        ),
    }
