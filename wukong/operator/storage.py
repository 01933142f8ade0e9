"""Disks: one claim per disk, named `<wukong>-<disk>`, as seed 002 describes.

A disk without `image` is a PersistentVolumeClaim; with `image` it is a CDI
DataVolume (CDI makes the claim of the same name and imports into it). Both
are created with the Wukong as controller owner, and checked without waiting:
the next reconcile comes from the watch on owned objects.

When is a disk ready for the VM? A claim that is Bound; a DataVolume that has
Succeeded; and a claim (or DataVolume) of a WaitForFirstConsumer class that is
still pending, because only the VM's pod will bind it: waiting for it before
creating the VM would wait forever. A Lost claim, a failed import or a missing
StorageClass is a problem for a person. A disk whose size grew has its claim's
request raised (expansion); sizes never shrink (admission rejects that).
"""

from typing import Any

from wukong.operator.owned import create_once, owned_object
from wukong.operator.steps import Problem, StepResult
from wukong.runtime.apis import DATA_VOLUMES
from wukong.runtime.cache import Store
from wukong.runtime.client import Object
from wukong.runtime.context import ReconcileContext
from wukong.runtime.errors import Invalid
from wukong.runtime.owners import is_controlled_by
from wukong.runtime.quantity import parse_quantity
from wukong.runtime.resources import PERSISTENT_VOLUME_CLAIMS, Resource

WAIT_FOR_FIRST_CONSUMER = "WaitForFirstConsumer"


def claim_name(wukong: Object, disk: dict[str, Any]) -> str:
    return f"{wukong['metadata']['name']}-{disk['name']}"


class DiskReconciler:
    """Ensures each disk's claim exists, has its size, and reports whether it is ready."""

    def __init__(self, *, claims: Store, data_volumes: Store, storage_classes: Store) -> None:
        self._claims = claims
        self._data_volumes = data_volumes
        self._classes = storage_classes

    async def ensure(self, ctx: ReconcileContext, wukong: Object) -> StepResult:
        result = StepResult()
        for disk in wukong["spec"].get("disks") or []:
            problem = await self._ensure_disk(ctx, wukong, disk, result)
            result.problem = result.problem or problem
        return result

    async def _ensure_disk(
        self, ctx: ReconcileContext, wukong: Object, disk: dict[str, Any], result: StepResult
    ) -> Problem | None:
        name = claim_name(wukong, disk)
        status: dict[str, Any] = {"name": disk["name"], "claimName": name, "bound": False}
        result.statuses.append(status)
        namespace = wukong["metadata"]["namespace"]
        resource, store = (
            (DATA_VOLUMES, self._data_volumes)
            if disk.get("image")
            else (PERSISTENT_VOLUME_CLAIMS, self._claims)
        )
        existing = store.get_by_name(namespace, name)
        if existing is None:
            class_name = disk.get("storageClassName")
            if class_name and self._classes.get_by_name(None, class_name) is None:
                return Problem(
                    "StorageClassNotFound",
                    f"disk {disk['name']}: StorageClass {class_name} does not exist",
                )
            result.waiting = result.waiting or f"claim {name} is being created"
            return await self._create(ctx, wukong, disk, resource, name, result)
        if not is_controlled_by(existing, wukong):
            return Problem(
                "ClaimConflict",
                f"disk {disk['name']}: {resource.kind} {name} exists and belongs to someone else",
            )
        bound, problem, waiting = self._readiness(disk, existing)
        status["bound"] = bound
        if waiting:
            result.waiting = result.waiting or waiting
        await self._expand(ctx, disk, namespace, name, result)
        return problem

    def _readiness(
        self, disk: dict[str, Any], existing: Object
    ) -> tuple[bool, Problem | None, str | None]:
        """(counts as bound, problem, what it waits for)."""
        name = existing["metadata"]["name"]
        status = existing.get("status") or {}
        phase = status.get("phase")
        if disk.get("image"):
            if phase in ("Succeeded", WAIT_FOR_FIRST_CONSUMER):
                return True, None, None
            if phase == "Failed":
                messages = [c.get("message", "") for c in status.get("conditions") or []]
                detail = "; ".join(m for m in messages if m) or "import failed"
                return False, Problem("ImportFailed", f"disk {disk['name']}: {detail}"), None
            progress = status.get("progress") or "N/A"
            return False, None, f"DataVolume {name} is {phase or 'Pending'} ({progress})"
        if phase == "Bound":
            return True, None, None
        if phase == "Lost":
            return (
                False,
                Problem(
                    "VolumeLost",
                    f"disk {disk['name']}: claim {name} lost its volume; its data is gone, "
                    "delete the claim to provision a new one",
                ),
                None,
            )
        if self._waits_for_first_consumer(existing):
            return True, None, None
        return False, None, f"claim {name} is {phase or 'Pending'}"

    def _waits_for_first_consumer(self, claim: Object) -> bool:
        storage_class = self._classes.get_by_name(None, claim["spec"].get("storageClassName") or "")
        return (storage_class or {}).get("volumeBindingMode") == WAIT_FOR_FIRST_CONSUMER

    async def _create(
        self,
        ctx: ReconcileContext,
        wukong: Object,
        disk: dict[str, Any],
        resource: Resource,
        name: str,
        result: StepResult,
    ) -> Problem | None:
        storage: dict[str, Any] = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": disk["size"]}},
        }
        if disk.get("storageClassName"):
            storage["storageClassName"] = disk["storageClassName"]
        if disk.get("image"):
            image = disk["image"]
            source = (
                {"registry": {"url": image}}
                if image.startswith("docker://")
                else {"http": {"url": image}}
            )
            spec: dict[str, Any] = {"source": source, "storage": storage}
        else:
            spec = storage
        body = owned_object(wukong, resource, name, spec=spec)
        try:
            if not await create_once(ctx, resource, body):
                return None
        except Invalid as exc:
            return Problem("InvalidDisk", f"disk {disk['name']}: {exc.message}")
        result.changes.append(("Created", f"Created {resource.kind} {name}"))
        return None

    async def _expand(
        self,
        ctx: ReconcileContext,
        disk: dict[str, Any],
        namespace: str,
        name: str,
        result: StepResult,
    ) -> None:
        # A DataVolume's claim has the DataVolume's name; expanding the claim is
        # how both are grown.
        claim = self._claims.get_by_name(namespace, name)
        if claim is None:
            return
        requested = claim["spec"]["resources"]["requests"]["storage"]
        if parse_quantity(disk["size"]) <= parse_quantity(requested):
            return
        patch = {"spec": {"resources": {"requests": {"storage": disk["size"]}}}}
        await ctx.client.patch(PERSISTENT_VOLUME_CLAIMS, name, patch, namespace=namespace)
        result.changes.append(
            ("ExpandingVolume", f"Expanding claim {name} from {requested} to {disk['size']}")
        )
