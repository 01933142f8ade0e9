"""The KubeVirt VirtualMachine of a Wukong, and what its instance reports.

The VM has the Wukong's name, is created only once networks and disks are
ready, and is kept in line with the spec (cpu, memory, running, networks,
disks) by a merge patch of its spec when it differs. Its instance (VMI) is
where the truth about the guest lives: phase, node and addresses.

Only a VM the Wukong controls is patched, and only an instance that VM
controls is read as the guest (`owned_guest`): a VM or VMI of the Wukong's
name made by someone else is a `NameConflict`, left exactly as it is.

A live migration (a VirtualMachineInstanceMigration naming the VMI) is
active until its phase is `Succeeded` or `Failed`; meanwhile the VMI keeps
running on its source node and `migrationState` names the target node once
the target pod is scheduled. The node change it ends with is not a fault.
"""

from dataclasses import dataclass
from typing import Any

from wukong.operator.api import WUKONG_LABEL, NetworkStatus, VolumeStatus
from wukong.operator.owned import create_once, name_conflict, optimistic_lock, owned_object
from wukong.operator.steps import Problem, StepResult
from wukong.operator.views import WukongView
from wukong.runtime import Invalid, Object, ReconcileContext, is_controlled_by
from wukong.runtime.apis import VIRTUAL_MACHINE_INSTANCES, VIRTUAL_MACHINES


def desired_spec(
    wukong: WukongView, *, networks: list[NetworkStatus], volumes: list[VolumeStatus]
) -> dict[str, Any]:
    spec = wukong.spec
    disks_by_name = {disk.name: disk for disk in spec.disks}
    vm_volumes = []
    for volume in volumes:
        source = (
            {"dataVolume": {"name": volume.claim_name}}
            if disks_by_name[volume.name].image
            else {"persistentVolumeClaim": {"claimName": volume.claim_name}}
        )
        vm_volumes.append({"name": volume.name, **source})
    interfaces = [{"name": "default", "masquerade": {}}]
    vm_networks: list[dict[str, Any]] = [{"name": "default", "pod": {}}]
    for network in networks:
        interfaces.append({"name": network.name, "bridge": {}})
        vm_networks.append({"name": network.name, "multus": {"networkName": network.nad_name}})
    return {
        "running": spec.running,
        "template": {
            "metadata": {"labels": {WUKONG_LABEL: wukong.name}},
            "spec": {
                "domain": {
                    "cpu": {"cores": spec.cpu},
                    "memory": {"guest": spec.memory},
                    "devices": {
                        "disks": [
                            {"name": volume.name, "disk": {"bus": "virtio"}} for volume in volumes
                        ],
                        "interfaces": interfaces,
                    },
                },
                "networks": vm_networks,
                "volumes": vm_volumes,
            },
        },
    }


@dataclass(frozen=True)
class OwnedGuest:
    """The Wukong's own VM and instance (None where there is none of its own)."""

    vm: Object | None
    vmi: Object | None
    conflict: Problem | None


def owned_guest(wukong: WukongView, vm: Object | None, vmi: Object | None) -> OwnedGuest:
    """Keep only the VM the Wukong controls and the instance that VM controls."""
    if vm is not None and not is_controlled_by(vm, wukong.body):
        return OwnedGuest(None, None, name_conflict("the VM", VIRTUAL_MACHINES, vm))
    if vmi is not None and (vm is None or not is_controlled_by(vmi, vm)):
        # Without a VM of ours yet, an instance cannot be ours (KubeVirt makes it
        # from the VM); with one, an instance it does not control is someone else's.
        conflict = name_conflict("the VM", VIRTUAL_MACHINE_INSTANCES, vmi) if vm else None
        return OwnedGuest(vm, None, conflict)
    return OwnedGuest(vm, vmi, None)


async def ensure_virtual_machine(
    ctx: ReconcileContext, wukong: WukongView, existing: Object | None, spec: dict[str, Any]
) -> StepResult[None]:
    """Create the VM, or patch `existing` (the Wukong's own: see `owned_guest`) to `spec`."""
    try:
        if existing is None:
            body = owned_object(wukong, VIRTUAL_MACHINES, wukong.name, spec=spec)
            if await create_once(ctx, VIRTUAL_MACHINES, body):
                return StepResult(changes=[("Created", f"Created VirtualMachine {wukong.name}")])
        elif not _contains(existing.get("spec") or {}, spec):
            patch = {**optimistic_lock(existing), "spec": spec}
            await ctx.client.patch(VIRTUAL_MACHINES, wukong.name, patch, namespace=wukong.namespace)
            return StepResult(changes=[("Updated", f"Updated VirtualMachine {wukong.name}")])
    except Invalid as exc:
        return StepResult(problem=Problem("VirtualMachineRejected", exc.message))
    return StepResult()


@dataclass(frozen=True)
class GuestStatus:
    phase: str | None
    node_name: str | None
    ip_addresses: list[str]
    reason: str | None


def guest_status(vmi: Object | None) -> GuestStatus:
    if vmi is None:
        return GuestStatus(phase=None, node_name=None, ip_addresses=[], reason=None)
    status = vmi.get("status") or {}
    addresses: list[str] = []
    for interface in status.get("interfaces") or []:
        for address in interface.get("ipAddresses") or [interface.get("ipAddress")]:
            if address and address not in addresses:
                addresses.append(address)
    return GuestStatus(
        phase=status.get("phase"),
        node_name=status.get("nodeName"),
        ip_addresses=addresses,
        reason=status.get("reason"),
    )


FINAL_MIGRATION_PHASES = ("Succeeded", "Failed")


def active_migration(vmi: Object | None, migrations: list[Object]) -> dict[str, Any] | None:
    """The oldest unfinished migration of `vmi`, as status (name, phase, nodes), if any."""
    if vmi is None:
        return None
    vmi_status = vmi.get("status") or {}
    active = [
        migration
        for migration in migrations
        if (migration.get("status") or {}).get("phase") not in FINAL_MIGRATION_PHASES
    ]
    if not active:
        return None
    migration = min(active, key=lambda m: m["metadata"].get("creationTimestamp") or "")
    status = migration.get("status") or {}
    state = status.get("migrationState") or {}
    vmi_state = vmi_status.get("migrationState") or {}
    if not state and vmi_state.get("migrationUid") == migration["metadata"].get("uid"):
        state = vmi_state
    return {
        "name": migration["metadata"]["name"],
        "phase": status.get("phase") or "Pending",
        "sourceNode": state.get("sourceNode") or vmi_status.get("nodeName"),
        "targetNode": state.get("targetNode"),
    }


def _contains(actual: Any, wanted: Any) -> bool:
    """Whether `actual` has every field of `wanted` with the same value (lists exactly).

    Fields a real KubeVirt adds by defaulting do not count as differences.
    """
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(
            key in actual and _contains(actual[key], value) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(wanted)
            and all(_contains(a, w) for a, w in zip(actual, wanted, strict=True))
        )
    return bool(actual == wanted)
