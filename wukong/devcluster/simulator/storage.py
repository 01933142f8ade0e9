"""The PV binder and the pvc-protection controller, simulated.

A claim of an Immediate class is bound `bind_delay` after it appears; a claim
of a WaitForFirstConsumer class is bound only once a VirtualMachineInstance
that uses it is being scheduled (the scheduler's volume binding). A claim whose
request grows gets the new capacity `resize_delay` later (online expansion).
A claim CDI populates (annotated `cdi.kubevirt.io/storage.usePopulator`) is
bound by CDI when population completes, not here. No PersistentVolume
objects are made: status is what consumers read. The
`kubernetes.io/pvc-protection` finalizer, added by the real admission plugin,
is removed once no VMI uses the claim, as kube-controller-manager would.
"""

from wukong.devcluster.simulator.timing import Delays, SimulationConfig
from wukong.runtime import (
    Informer,
    NotFound,
    Object,
    ReconcileContext,
    Request,
    Result,
    parse_quantity,
)
from wukong.runtime.resources import PERSISTENT_VOLUME_CLAIMS

PVC_PROTECTION = "kubernetes.io/pvc-protection"
WAIT_FOR_FIRST_CONSUMER = "WaitForFirstConsumer"
USE_POPULATOR = "cdi.kubevirt.io/storage.usePopulator"


def populated_by_cdi(claim: Object) -> bool:
    """Whether CDI (not the volume binder) binds this claim, once it is populated."""
    annotations = claim["metadata"].get("annotations") or {}
    return annotations.get(USE_POPULATOR) == "true"


def claim_names(vmi: Object) -> list[str]:
    """The claims a VMI's volumes use (a DataVolume's claim has the DataVolume's name)."""
    names = []
    for volume in vmi.get("spec", {}).get("volumes") or []:
        if "persistentVolumeClaim" in volume:
            names.append(volume["persistentVolumeClaim"]["claimName"])
        elif "dataVolume" in volume:
            names.append(volume["dataVolume"]["name"])
    return names


def claims_of_vmi(vmi: Object) -> list[Request]:
    namespace = vmi["metadata"]["namespace"]
    return [Request(namespace, name) for name in claim_names(vmi)]


class VolumeBinder:
    def __init__(
        self,
        *,
        config: SimulationConfig,
        claims: Informer,
        storage_classes: Informer,
        vmis: Informer,
    ) -> None:
        self._config = config
        self._claims = claims
        self._classes = storage_classes
        self._vmis = vmis
        self._delays = Delays()

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        claim = self._claims.store.get_by_name(request.namespace, request.name)
        key = str(request)
        if claim is None:
            self._delays.forget(key)
            return Result()
        consumers = self._consumers(claim)
        if claim["metadata"].get("deletionTimestamp"):
            if not consumers:
                await self._release(ctx, claim)
            return Result()
        spec, status = claim["spec"], claim.get("status") or {}
        requested = spec["resources"]["requests"]["storage"]
        storage_class = self._classes.store.get_by_name(None, spec.get("storageClassName") or "")
        if storage_class is None or status.get("phase") == "Lost":
            return Result()  # no provisioner would act: the claim stays as it is
        if status.get("phase") != "Bound":
            if populated_by_cdi(claim):
                return Result()
            waiting = storage_class.get("volumeBindingMode") == WAIT_FOR_FIRST_CONSUMER
            if waiting and not any(self._scheduling(vmi) for vmi in consumers):
                return Result()
            wait = self._delays.remaining("bind", key, self._config.bind_delay)
            if wait > 0:
                return Result(requeue_after=wait)
            await self._set_status(ctx, request, requested, spec)
            return Result()
        capacity = (status.get("capacity") or {}).get("storage", "0")
        if parse_quantity(requested) > parse_quantity(capacity):
            wait = self._delays.remaining(f"resize {requested}", key, self._config.resize_delay)
            if wait > 0:
                return Result(requeue_after=wait)
            await self._set_status(ctx, request, requested, spec)
        return Result()

    def _consumers(self, claim: Object) -> list[Object]:
        namespace, name = claim["metadata"]["namespace"], claim["metadata"]["name"]
        return [
            vmi
            for vmi in self._vmis.store.list_objects(namespace=namespace)
            if name in claim_names(vmi)
        ]

    @staticmethod
    def _scheduling(vmi: Object) -> bool:
        return (vmi.get("status") or {}).get("phase") in ("Scheduling", "Scheduled", "Running")

    async def _set_status(
        self, ctx: ReconcileContext, request: Request, capacity: str, spec: Object
    ) -> None:
        status = {
            "phase": "Bound",
            "capacity": {"storage": capacity},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
        }
        await ctx.client.patch_status(
            PERSISTENT_VOLUME_CLAIMS, request.name, {"status": status}, namespace=request.namespace
        )

    async def _release(self, ctx: ReconcileContext, claim: Object) -> None:
        metadata = claim["metadata"]
        finalizers = metadata.get("finalizers") or []
        if PVC_PROTECTION not in finalizers:
            return
        patch = {
            "metadata": {
                "finalizers": [f for f in finalizers if f != PVC_PROTECTION],
                "resourceVersion": metadata["resourceVersion"],
            }
        }
        try:
            await ctx.client.patch(
                PERSISTENT_VOLUME_CLAIMS, metadata["name"], patch, namespace=metadata["namespace"]
            )
        except NotFound:
            pass
