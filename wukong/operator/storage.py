"""Disks: one claim per disk, named `<wukong>-<disk>` (see `names`).

A disk without `image` is a PersistentVolumeClaim; with `image` it is a CDI
DataVolume (CDI makes the claim of the same name and imports into it). Both
are created with the Wukong as controller owner, and checked without waiting:
the next reconcile comes from the watch on owned objects.

When is a disk ready for the VM? When KubeVirt would start the VM with it
(`VolumeReadyToAttachToNode` in KubeVirt): a claim that is Bound, or pending
on a WaitForFirstConsumer class, because only the VM's pod will bind it; a
DataVolume that has `Succeeded`, or that only waits for its consumer
(`PendingPopulation` with CDI's volume populators, `WaitForFirstConsumer`
without): CDI imports into it only once the VM's launcher pod exists, so
waiting for `Succeeded` first would wait forever. Every other DataVolume phase
(Pending, PVCBound, ImportScheduled, ImportInProgress, the clone and upload
phases, Paused, Unknown, ...) is progress to wait for, reported with CDI's
`progress`. A Lost claim, a failed import or a missing StorageClass is a
problem for a person.

A disk whose size grew has its claim's request raised (expansion); sizes never
shrink (admission rejects that). Expansion never stops the rest: a class
without `allowVolumeExpansion` (the API answers 403) or a claim not bound yet
(422) is reported on `VolumesBound` (`ExpansionNotSupported`,
`ExpansionPending`) while networks, the VM and status go on, and is retried
when the StorageClass or the claim changes.
"""

from dataclasses import dataclass, replace
from typing import Any

from wukong.operator.api import DiskSpec, VolumeStatus
from wukong.operator.names import child_name
from wukong.operator.owned import create_once, name_conflict, optimistic_lock, owned_object
from wukong.operator.steps import Problem, StepResult
from wukong.operator.views import WukongView
from wukong.runtime import (
    ApiError,
    Invalid,
    Object,
    ReconcileContext,
    Store,
    is_controlled_by,
    parse_quantity,
)
from wukong.runtime.apis import DATA_VOLUMES
from wukong.runtime.resources import PERSISTENT_VOLUME_CLAIMS, Resource

WAIT_FOR_FIRST_CONSUMER = "WaitForFirstConsumer"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
# DataVolume phases (CDI's DataVolumePhase) in which KubeVirt starts the VM:
# done, or waiting for the VM's pod to consume the claim.
_DATA_VOLUME_READY = frozenset({"Succeeded", "PendingPopulation", WAIT_FOR_FIRST_CONSUMER})


def claim_name(wukong: WukongView, disk: DiskSpec) -> str:
    return child_name(wukong.name, disk.name)


def storage_class_key(class_name: str | None) -> str:
    """The value a disk's class is indexed under; "" is the cluster's default class."""
    return class_name or ""


def is_default_class(storage_class: Object) -> bool:
    annotations = storage_class["metadata"].get("annotations") or {}
    return annotations.get(DEFAULT_CLASS_ANNOTATION) == "true"


@dataclass(frozen=True)
class _Readiness:
    ready: bool
    problem: Problem | None = None
    waiting: str | None = None


class DiskReconciler:
    """Ensures each disk's claim exists, has its size, and reports whether it is ready."""

    def __init__(self, *, claims: Store, data_volumes: Store, storage_classes: Store) -> None:
        self._claims = claims
        self._data_volumes = data_volumes
        self._classes = storage_classes

    async def ensure(self, ctx: ReconcileContext, wukong: WukongView) -> StepResult[VolumeStatus]:
        return StepResult.combine(
            [await self._ensure_disk(ctx, wukong, disk) for disk in wukong.spec.disks]
        )

    async def _ensure_disk(
        self, ctx: ReconcileContext, wukong: WukongView, disk: DiskSpec
    ) -> StepResult[VolumeStatus]:
        name = claim_name(wukong, disk)
        status = VolumeStatus(name=disk.name, claim_name=name, bound=False, size=disk.size)
        resource, store = (
            (DATA_VOLUMES, self._data_volumes)
            if disk.image
            else (PERSISTENT_VOLUME_CLAIMS, self._claims)
        )
        existing = store.get_by_name(wukong.namespace, name)
        if existing is None:
            class_name = disk.storage_class_name
            if class_name and self._classes.get_by_name(None, class_name) is None:
                return StepResult(
                    [status],
                    Problem(
                        "StorageClassNotFound",
                        f"disk {disk.name}: StorageClass {class_name} does not exist",
                    ),
                )
            created = await self._create(ctx, wukong, disk, resource, name)
            return StepResult.combine(
                [StepResult([status], waiting=f"claim {name} is being created"), created]
            )
        if not is_controlled_by(existing, wukong.body):
            return StepResult([status], name_conflict(f"disk {disk.name}", resource, existing))
        observed = existing.get("status") or {}
        if disk.image:
            readiness = self._data_volume_readiness(disk, existing)
        else:
            readiness = self._claim_readiness(disk, existing)
        # A DataVolume's claim has the DataVolume's name (and CDI makes the
        # DataVolume its controller); expanding the claim is how both are grown.
        claim = self._claims.get_by_name(wukong.namespace, name)
        if claim is not None and not (
            is_controlled_by(claim, wukong.body) or is_controlled_by(claim, existing)
        ):
            claim = None
        capacity = ((claim.get("status") or {}).get("capacity") or {}) if claim else {}
        status = replace(
            status,
            phase=observed.get("phase") or "Pending",
            progress=observed.get("progress") if disk.image else None,
            bound=readiness.ready,
            capacity=capacity.get("storage"),
        )
        checked = StepResult([status], readiness.problem, readiness.waiting)
        if claim is None:
            return checked
        return StepResult.combine([checked, await self._expand(ctx, disk, claim)])

    def _data_volume_readiness(self, disk: DiskSpec, data_volume: Object) -> _Readiness:
        name = data_volume["metadata"]["name"]
        status = data_volume.get("status") or {}
        phase = status.get("phase") or "Pending"
        if phase in _DATA_VOLUME_READY:
            return _Readiness(ready=True)
        if phase == "Failed":
            messages = [c.get("message", "") for c in status.get("conditions") or []]
            detail = "; ".join(m for m in messages if m) or "import failed"
            return _Readiness(
                ready=False, problem=Problem("ImportFailed", f"disk {disk.name}: {detail}")
            )
        progress = status.get("progress")
        detail = f" ({progress})" if progress and progress != "N/A" else ""
        return _Readiness(ready=False, waiting=f"DataVolume {name} is {phase}{detail}")

    def _claim_readiness(self, disk: DiskSpec, claim: Object) -> _Readiness:
        name = claim["metadata"]["name"]
        phase = (claim.get("status") or {}).get("phase")
        if phase == "Bound":
            return _Readiness(ready=True)
        if phase == "Lost":
            return _Readiness(
                ready=False,
                problem=Problem(
                    "VolumeLost",
                    f"disk {disk.name}: claim {name} lost its volume; its data is gone, "
                    "delete the claim to provision a new one",
                ),
            )
        if self._waits_for_first_consumer(claim):
            return _Readiness(ready=True)
        return _Readiness(ready=False, waiting=f"claim {name} is {phase or 'Pending'}")

    def _class_of(self, claim: Object) -> Object | None:
        return self._classes.get_by_name(None, claim["spec"].get("storageClassName") or "")

    def _waits_for_first_consumer(self, claim: Object) -> bool:
        storage_class = self._class_of(claim) or {}
        return storage_class.get("volumeBindingMode") == WAIT_FOR_FIRST_CONSUMER

    async def _create(
        self,
        ctx: ReconcileContext,
        wukong: WukongView,
        disk: DiskSpec,
        resource: Resource,
        name: str,
    ) -> StepResult[VolumeStatus]:
        storage: dict[str, Any] = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": disk.size}},
        }
        if disk.storage_class_name:
            storage["storageClassName"] = disk.storage_class_name
        if disk.image:
            source = (
                {"registry": {"url": disk.image}}
                if disk.image.startswith("docker://")
                else {"http": {"url": disk.image}}
            )
            spec: dict[str, Any] = {"source": source, "storage": storage}
        else:
            spec = storage
        body = owned_object(wukong, resource, name, spec=spec)
        try:
            if not await create_once(ctx, resource, body):
                return StepResult()
        except Invalid as exc:
            return StepResult(problem=Problem("InvalidDisk", f"disk {disk.name}: {exc.message}"))
        return StepResult(changes=[("Created", f"Created {resource.kind} {name}")])

    async def _expand(
        self, ctx: ReconcileContext, disk: DiskSpec, claim: Object
    ) -> StepResult[VolumeStatus]:
        metadata = claim["metadata"]
        name = metadata["name"]
        requested = claim["spec"]["resources"]["requests"]["storage"]
        if parse_quantity(disk.size) <= parse_quantity(requested):
            return StepResult()
        what = f"disk {disk.name}: claim {name} cannot grow from {requested} to {disk.size}"
        # Ask the cache first: both answers are certain refusals from the API
        # server (the PVC resize admission plugin, PVC validation), and a
        # request per reconcile would only repeat them. Their events retry.
        storage_class = self._class_of(claim)
        if storage_class is not None and not storage_class.get("allowVolumeExpansion"):
            class_name = storage_class["metadata"]["name"]
            return StepResult(
                degraded=Problem(
                    "ExpansionNotSupported",
                    f"{what}: StorageClass {class_name} does not allow volume expansion",
                )
            )
        if (claim.get("status") or {}).get("phase") != "Bound":
            return StepResult(
                degraded=Problem(
                    "ExpansionPending", f"{what} until it is bound (expanded once bound)"
                )
            )
        patch = {
            **optimistic_lock(claim),
            "spec": {"resources": {"requests": {"storage": disk.size}}},
        }
        try:
            await ctx.client.patch(
                PERSISTENT_VOLUME_CLAIMS, name, patch, namespace=metadata["namespace"]
            )
        except ApiError as exc:
            if exc.status not in (403, 422):
                raise
            # The cache was behind the server; its answer is the truth.
            reason = "ExpansionNotSupported" if exc.status == 403 else "ExpansionPending"
            return StepResult(degraded=Problem(reason, f"{what}: {exc.message}"))
        return StepResult(
            changes=[("ExpandingVolume", f"Expanding claim {name} from {requested} to {disk.size}")]
        )
