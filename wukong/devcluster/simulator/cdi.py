"""CDI's DataVolume controller, simulated as CDI with volume populators behaves.

What real CDI does (doc/cdi-populators.md, doc/datavolumes.md in
kubevirt/containerized-data-importer), and so what this does:

- A DataVolume gets a claim of the same name (owned by it, annotated
  `cdi.kubevirt.io/storage.usePopulator`). The claim binds only once
  population completes, so the volume binder leaves such claims to CDI.
- On a WaitForFirstConsumer class the DataVolume is `PendingPopulation` until
  a pod consumes the claim: nothing is imported before the VM's launcher
  exists. KubeVirt counts `PendingPopulation` as ready to start a VM
  (`IsSucceededOrPendingPopulation`), which is what breaks the circle.
- With a consumer (or on an Immediate class) the import is `ImportScheduled`,
  then `ImportInProgress` with `progress` for `import_delay`, then the claim
  is bound and the DataVolume `Succeeded` ("100.0%").
- An image listed in `failing_images` ends `Failed` with a condition message.
- Deleting a DataVolume deletes its claim (the garbage collector's job in a
  real cluster).
"""

import math
from typing import Any

from wukong.devcluster.simulator.storage import (
    USE_POPULATOR,
    WAIT_FOR_FIRST_CONSUMER,
    claim_names,
)
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
    controller_uid,
)
from wukong.runtime.apis import DATA_VOLUMES
from wukong.runtime.resources import PERSISTENT_VOLUME_CLAIMS

_STORAGE_DEFAULT = "1Gi"
# VMI phases in which its launcher pod exists: the claim has a consumer.
_CONSUMING_PHASES = ("Scheduling", "Scheduled", "Running")


def source_url(data_volume: Object) -> str:
    source = data_volume.get("spec", {}).get("source") or {}
    for kind in ("registry", "http"):
        if kind in source:
            return str(source[kind].get("url", ""))
    return ""


class DataVolumeImporter:
    def __init__(
        self,
        *,
        config: SimulationConfig,
        data_volumes: Informer,
        claims: Informer,
        storage_classes: Informer,
        vmis: Informer,
    ) -> None:
        self._config = config
        self._data_volumes = data_volumes
        self._claims = claims
        self._classes = storage_classes
        self._vmis = vmis
        self._delays = Delays()

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        key = str(request)
        data_volume = self._data_volumes.store.get_by_name(request.namespace, request.name)
        claim = self._claims.store.get_by_name(request.namespace, request.name)
        if data_volume is None:
            self._delays.forget(key)
            if claim is not None and _owned_by_data_volume(claim, request.name):
                try:
                    await ctx.client.delete(
                        PERSISTENT_VOLUME_CLAIMS, request.name, namespace=request.namespace
                    )
                except NotFound:
                    pass
            return Result()
        if data_volume["metadata"].get("deletionTimestamp"):
            return Result()
        if claim is None:
            await self._create_claim(ctx, data_volume)
            await self._set_status(ctx, data_volume, phase="Pending", progress="N/A")
            return Result()
        if (claim.get("status") or {}).get("phase") == "Bound":
            await self._set_status(ctx, data_volume, phase="Succeeded", progress="100.0%")
            return Result()
        if source_url(data_volume) in self._config.failing_images:
            await self._set_status(
                ctx,
                data_volume,
                phase="Failed",
                progress="N/A",
                message=f"Unable to pull image {source_url(data_volume)}: manifest unknown",
            )
            return Result()
        if self._waits_for_consumer(claim):
            self._delays.forget(key)
            await self._set_status(ctx, data_volume, phase="PendingPopulation", progress="N/A")
            return Result()
        if not _started(data_volume):
            await self._set_status(ctx, data_volume, phase="ImportScheduled", progress="N/A")
            return Result(requeue_after=0.1)  # the importer pod starts
        wait = self._delays.remaining("import", key, self._config.import_delay)
        if wait > 0:
            # Rounded down: an import still running never reads "100.00%".
            done = math.floor(10000 * (1 - wait / self._config.import_delay)) / 100
            await self._set_status(
                ctx, data_volume, phase="ImportInProgress", progress=f"{done:.2f}%"
            )
            return Result(requeue_after=min(wait, 0.5))
        # Population done: the populator hands the volume to the claim.
        await self._bind(ctx, claim)
        await self._set_status(ctx, data_volume, phase="Succeeded", progress="100.0%")
        return Result()

    def _waits_for_consumer(self, claim: Object) -> bool:
        class_name = claim["spec"].get("storageClassName") or ""
        storage_class = self._classes.store.get_by_name(None, class_name) or {}
        if storage_class.get("volumeBindingMode") != WAIT_FOR_FIRST_CONSUMER:
            return False
        namespace, name = claim["metadata"]["namespace"], claim["metadata"]["name"]
        return not any(
            name in claim_names(vmi) and (vmi.get("status") or {}).get("phase") in _CONSUMING_PHASES
            for vmi in self._vmis.store.list_objects(namespace=namespace)
        )

    async def _create_claim(self, ctx: ReconcileContext, data_volume: Object) -> None:
        metadata = data_volume["metadata"]
        storage = data_volume.get("spec", {}).get("storage") or {}
        size = (storage.get("resources") or {}).get("requests", {}).get("storage")
        spec: dict[str, Any] = {
            "accessModes": storage.get("accessModes") or ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size or _STORAGE_DEFAULT}},
        }
        if storage.get("storageClassName"):
            spec["storageClassName"] = storage["storageClassName"]
        claim = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "labels": dict(metadata.get("labels") or {}),
                "annotations": {USE_POPULATOR: "true"},
                "ownerReferences": [controller_reference(data_volume, resource=DATA_VOLUMES)],
            },
            "spec": spec,
        }
        try:
            await ctx.client.create(PERSISTENT_VOLUME_CLAIMS, claim)
        except AlreadyExists:
            pass

    async def _bind(self, ctx: ReconcileContext, claim: Object) -> None:
        spec, metadata = claim["spec"], claim["metadata"]
        status = {
            "phase": "Bound",
            "capacity": {"storage": spec["resources"]["requests"]["storage"]},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
        }
        await ctx.client.patch_status(
            PERSISTENT_VOLUME_CLAIMS,
            metadata["name"],
            {"status": status},
            namespace=metadata["namespace"],
        )

    async def _set_status(
        self,
        ctx: ReconcileContext,
        data_volume: Object,
        *,
        phase: str,
        progress: str,
        message: str = "",
    ) -> None:
        status: dict[str, Any] = {"phase": phase, "progress": progress}
        if message:
            status["conditions"] = [
                {"type": "Running", "status": "False", "reason": "Error", "message": message}
            ]
        current = data_volume.get("status") or {}
        if all(current.get(k) == v for k, v in status.items()):
            return
        metadata = data_volume["metadata"]
        await ctx.client.patch_status(
            DATA_VOLUMES, metadata["name"], {"status": status}, namespace=metadata["namespace"]
        )


def _started(data_volume: Object) -> bool:
    return (data_volume.get("status") or {}).get("phase") in ("ImportScheduled", "ImportInProgress")


def _owned_by_data_volume(claim: Object, name: str) -> bool:
    refs = claim["metadata"].get("ownerReferences") or []
    return controller_uid(claim) is not None and any(
        ref.get("kind") == "DataVolume" and ref.get("name") == name for ref in refs
    )
