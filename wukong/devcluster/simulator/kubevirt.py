"""KubeVirt's virt-controller, simulated: VirtualMachine -> VirtualMachineInstance.

A running VM gets a VMI of the same name (owned by it) built from its
template. The VMI goes Scheduling -> Scheduled (once every claim it uses is
bound; being scheduled is what binds WaitForFirstConsumer claims) -> Running
(once every DataVolume it uses has Succeeded), `schedule_delay` and
`boot_delay` apart, on `node_name`, with an address per interface. A VM listed
in `failing_vms` ends `Failed`. Stopping or deleting a VM deletes its VMI.
"""

import hashlib
from typing import Any

from wukong.devcluster.simulator.storage import claim_names
from wukong.devcluster.simulator.timing import Delays, SimulationConfig
from wukong.runtime.apis import VIRTUAL_MACHINE_INSTANCES, VIRTUAL_MACHINES
from wukong.runtime.client import Object
from wukong.runtime.context import ReconcileContext, Request, Result
from wukong.runtime.errors import AlreadyExists, NotFound
from wukong.runtime.informer import Informer
from wukong.runtime.owners import controller_reference, is_controlled_by


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
    ) -> None:
        self._config = config
        self._vms = vms
        self._vmis = vmis
        self._claims = claims
        self._data_volumes = data_volumes
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
            await self._create_vmi(ctx, vm)
            await self._set_vm_status(ctx, vm, printable="Starting", ready=False)
            return Result()
        phase = (vmi.get("status") or {}).get("phase")
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
