"""KubeVirt's virt-controller and virt-handler, simulated: VirtualMachine -> VMI.

A running VM gets a VMI of the same name (owned by it) built from its
template, but only once every DataVolume it uses is Succeeded or only waits
for its consumer (`PendingPopulation`, `WaitForFirstConsumer`): KubeVirt's
`VolumeReadyToAttachToNode` / `IsSucceededOrPendingPopulation`; until then
the VM is `Provisioning`. The VMI goes Scheduling (its launcher pod exists:
the consumer that binds WaitForFirstConsumer claims and starts imports) ->
Scheduled (once every claim it uses is bound) -> Running (once every
DataVolume has Succeeded), `schedule_delay` and `boot_delay` apart, on
`node_name`, with an address per interface. A VM listed in `failing_vms` ends
`Failed`. Stopping or deleting a VM deletes its VMI.

A VMI whose node's `Ready` condition is `Unknown` (a Node object the dev
cluster's "node lifecycle controller", i.e. a test, marks unreachable) goes
to phase `Unknown`, as KubeVirt reports a VMI whose host cannot be reached,
and back to `Running` when the node is Ready again.
"""

import hashlib
from typing import Any

from wukong.devcluster.simulator.storage import claim_names
from wukong.devcluster.simulator.timing import Delays, SimulationConfig
from wukong.runtime import (
    AlreadyExists,
    Informer,
    NotFound,
    Object,
    ReconcileContext,
    Request,
    Result,
    controller_reference,
    is_controlled_by,
)
from wukong.runtime.apis import VIRTUAL_MACHINE_INSTANCES, VIRTUAL_MACHINES


def _address(seed: str, index: int) -> str:
    digest = hashlib.sha256(f"{seed}/{index}".encode()).digest()
    prefix = "10.244" if index == 0 else f"192.168.{100 + index}"
    if index == 0:
        return f"{prefix}.{digest[0]}.{digest[1] % 254 + 1}"
    return f"{prefix}.{digest[0] % 254 + 1}"


class VirtualMachineController:
    def __init__(
        self,
        *,
        config: SimulationConfig,
        vms: Informer,
        vmis: Informer,
        claims: Informer,
        data_volumes: Informer,
        nodes: Informer,
    ) -> None:
        self._config = config
        self._vms = vms
        self._vmis = vmis
        self._claims = claims
        self._data_volumes = data_volumes
        self._nodes = nodes
        self._delays = Delays()

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        key = str(request)
        vm = self._vms.store.get_by_name(request.namespace, request.name)
        vmi = self._vmis.store.get_by_name(request.namespace, request.name)
        if vm is None or vm["metadata"].get("deletionTimestamp") or not _wants_running(vm):
            self._delays.forget(key)
            if vmi is not None and (vm is None or is_controlled_by(vmi, vm)):
                await self._delete_vmi(ctx, request)
            if vm is not None and vm["metadata"].get("deletionTimestamp") is None:
                await self._set_vm_status(ctx, vm, printable="Stopped", ready=False)
            return Result()
        if vmi is None:
            if not self._volumes_ready(vm):
                await self._set_vm_status(ctx, vm, printable="Provisioning", ready=False)
                return Result()
            await self._create_vmi(ctx, vm)
            await self._set_vm_status(ctx, vm, printable="Starting", ready=False)
            return Result()
        phase = (vmi.get("status") or {}).get("phase")
        node = (vmi.get("status") or {}).get("nodeName")
        if phase in ("Running", "Unknown") and node:
            reachable = self._reachable(node)
            if phase == "Running" and not reachable:
                status = {"phase": "Unknown", "reason": "NodeUnreachable"}
                await self._set_vmi_status(ctx, vmi, status)
                await self._set_vm_status(ctx, vm, printable="Unknown", ready=False)
                return Result()
            if phase == "Unknown" and reachable:
                await self._set_vmi_status(ctx, vmi, {"phase": "Running", "reason": None})
                return Result()
        if phase in (None, "", "Pending"):
            await self._set_vmi_status(ctx, vmi, {"phase": "Scheduling"})
            return Result()
        if phase == "Scheduling":
            if not self._claims_bound(vmi):
                return Result(requeue_after=1.0)
            wait = self._delays.remaining("schedule", key, self._config.schedule_delay)
            if wait > 0:
                return Result(requeue_after=wait)
            status = {"phase": "Scheduled", "nodeName": self._config.node_name}
            await self._set_vmi_status(ctx, vmi, status)
            return Result()
        if phase == "Scheduled":
            if key in self._config.failing_vms:
                status = {"phase": "Failed", "reason": "Simulated boot failure"}
                await self._set_vmi_status(ctx, vmi, status)
                await self._set_vm_status(ctx, vm, printable="CrashLoopBackOff", ready=False)
                return Result()
            if not self._imports_done(vmi):
                return Result(requeue_after=1.0)
            wait = self._delays.remaining("boot", key, self._config.boot_delay)
            if wait > 0:
                return Result(requeue_after=wait)
            await self._set_vmi_status(ctx, vmi, {"phase": "Running", **_interfaces(vmi)})
            return Result()
        if phase == "Running":
            await self._set_vm_status(ctx, vm, printable="Running", ready=True)
        return Result()

    def _reachable(self, node_name: str) -> bool:
        node = self._nodes.store.get_by_name(None, node_name)
        if node is None:
            return True  # the dev cluster has no Node objects unless a test makes one
        conditions = (node.get("status") or {}).get("conditions") or []
        ready = next((c for c in conditions if c.get("type") == "Ready"), None)
        return ready is None or ready.get("status") != "Unknown"

    def _volumes_ready(self, vm: Object) -> bool:
        namespace = vm["metadata"]["namespace"]
        template = (vm.get("spec") or {}).get("template") or {}
        for volume in (template.get("spec") or {}).get("volumes") or []:
            if "dataVolume" not in volume:
                continue
            name = volume["dataVolume"]["name"]
            data_volume = self._data_volumes.store.get_by_name(namespace, name)
            phase = ((data_volume or {}).get("status") or {}).get("phase")
            if phase not in ("Succeeded", "PendingPopulation", "WaitForFirstConsumer"):
                return False
        return True

    def _claims_bound(self, vmi: Object) -> bool:
        namespace = vmi["metadata"]["namespace"]
        for name in claim_names(vmi):
            claim = self._claims.store.get_by_name(namespace, name)
            if claim is None or (claim.get("status") or {}).get("phase") != "Bound":
                return False
        return True

    def _imports_done(self, vmi: Object) -> bool:
        namespace = vmi["metadata"]["namespace"]
        for volume in vmi.get("spec", {}).get("volumes") or []:
            if "dataVolume" not in volume:
                continue
            data_volume = self._data_volumes.store.get_by_name(
                namespace, volume["dataVolume"]["name"]
            )
            if data_volume is None or (data_volume.get("status") or {}).get("phase") != (
                "Succeeded"
            ):
                return False
        return True

    async def _create_vmi(self, ctx: ReconcileContext, vm: Object) -> None:
        metadata = vm["metadata"]
        template = vm.get("spec", {}).get("template") or {}
        vmi = {
            "apiVersion": VIRTUAL_MACHINE_INSTANCES.api_version,
            "kind": VIRTUAL_MACHINE_INSTANCES.kind,
            "metadata": {
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "labels": dict((template.get("metadata") or {}).get("labels") or {}),
                "ownerReferences": [controller_reference(vm, resource=VIRTUAL_MACHINES)],
            },
            "spec": template.get("spec") or {},
        }
        try:
            await ctx.client.create(VIRTUAL_MACHINE_INSTANCES, vmi)
        except AlreadyExists:
            pass

    async def _delete_vmi(self, ctx: ReconcileContext, request: Request) -> None:
        try:
            await ctx.client.delete(
                VIRTUAL_MACHINE_INSTANCES, request.name, namespace=request.namespace
            )
        except NotFound:
            pass

    async def _set_vmi_status(
        self, ctx: ReconcileContext, vmi: Object, status: dict[str, Any]
    ) -> None:
        metadata = vmi["metadata"]
        await ctx.client.patch_status(
            VIRTUAL_MACHINE_INSTANCES,
            metadata["name"],
            {"status": status},
            namespace=metadata["namespace"],
        )

    async def _set_vm_status(
        self, ctx: ReconcileContext, vm: Object, *, printable: str, ready: bool
    ) -> None:
        status = {"printableStatus": printable, "ready": ready, "created": printable != "Stopped"}
        current = vm.get("status") or {}
        if all(current.get(k) == v for k, v in status.items()):
            return
        metadata = vm["metadata"]
        await ctx.client.patch_status(
            VIRTUAL_MACHINES, metadata["name"], {"status": status}, namespace=metadata["namespace"]
        )


def _wants_running(vm: Object) -> bool:
    spec = vm.get("spec") or {}
    if "runStrategy" in spec:
        return bool(spec["runStrategy"] in ("Always", "RerunOnFailure"))
    return bool(spec.get("running", False))


def _interfaces(vmi: Object) -> dict[str, Any]:
    uid = vmi["metadata"]["uid"]
    networks = vmi.get("spec", {}).get("networks") or [{"name": "default"}]
    interfaces = []
    for index, network in enumerate(networks):
        address = _address(uid, index)
        interfaces.append({"name": network["name"], "ipAddress": address, "ipAddresses": [address]})
    return {"interfaces": interfaces}
