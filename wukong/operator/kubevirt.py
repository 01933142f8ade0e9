"""The KubeVirt VirtualMachine of a Wukong, and what its instance reports.

The VM has the Wukong's name, is created only once networks and disks are
ready, and is kept in line with the spec (cpu, memory, running, networks,
disks) by a merge patch of its spec when it differs. Its instance (VMI) is
where the truth about the guest lives: phase, node and addresses.

A live migration (a VirtualMachineInstanceMigration naming the VMI) is
active until its phase is `Succeeded` or `Failed`; meanwhile the VMI keeps
running on its source node and `migrationState` names the target node once
the target pod is scheduled. The node change it ends with is not a fault.
"""

from dataclasses import dataclass, field
from typing import Any

from wukong.operator.api import WUKONG_LABEL
from wukong.operator.owned import create_once, owned_object
from wukong.operator.steps import Problem
from wukong.runtime import Invalid, Object, ReconcileContext
from wukong.runtime.apis import VIRTUAL_MACHINES


def desired_spec(
    wukong: Object, *, networks: list[dict[str, Any]], volumes: list[dict[str, Any]]
) -> dict[str, Any]:
    spec = wukong["spec"]
    disks_by_name = {disk["name"]: disk for disk in spec.get("disks") or []}
    vm_volumes = []
    for volume in volumes:
        source = (
            {"dataVolume": {"name": volume["claimName"]}}
            if disks_by_name[volume["name"]].get("image")
            else {"persistentVolumeClaim": {"claimName": volume["claimName"]}}
        )
        vm_volumes.append({"name": volume["name"], **source})
    interfaces = [{"name": "default", "masquerade": {}}]
    vm_networks: list[dict[str, Any]] = [{"name": "default", "pod": {}}]
    for network in networks:
        interfaces.append({"name": network["name"], "bridge": {}})
        vm_networks.append({"name": network["name"], "multus": {"networkName": network["nadName"]}})
    return {
        "running": bool(spec.get("running", True)),
        "template": {
            "metadata": {"labels": {WUKONG_LABEL: wukong["metadata"]["name"]}},
            "spec": {
                "domain": {
                    "cpu": {"cores": spec.get("cpu", 1)},
                    "memory": {"guest": spec.get("memory", "1Gi")},
                    "devices": {
                        "disks": [
                            {"name": volume["name"], "disk": {"bus": "virtio"}}
                            for volume in volumes
                        ],
                        "interfaces": interfaces,
                    },
                },
                "networks": vm_networks,
                "volumes": vm_volumes,
            },
        },
    }


@dataclass
class VirtualMachineResult:
    problem: Problem | None = None
    changes: list[tuple[str, str]] = field(default_factory=list)


async def ensure_virtual_machine(
    ctx: ReconcileContext, wukong: Object, existing: Object | None, spec: dict[str, Any]
) -> VirtualMachineResult:
    result = VirtualMachineResult()
    metadata = wukong["metadata"]
    try:
        if existing is None:
            body = owned_object(wukong, VIRTUAL_MACHINES, metadata["name"], spec=spec)
            if await create_once(ctx, VIRTUAL_MACHINES, body):
                result.changes.append(("Created", f"Created VirtualMachine {metadata['name']}"))
        elif not _contains(existing.get("spec") or {}, spec):
            await ctx.client.patch(
                VIRTUAL_MACHINES, metadata["name"], {"spec": spec}, namespace=metadata["namespace"]
            )
            result.changes.append(("Updated", f"Updated VirtualMachine {metadata['name']}"))
    except Invalid as exc:
        result.problem = Problem("VirtualMachineRejected", exc.message)
    return result


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
