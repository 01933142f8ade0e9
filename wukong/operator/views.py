"""A Wukong as the controller reads it: parsed once per reconcile into frozen, typed views.

The spec, its disks and networks, the status and its conditions are the very
dataclasses of `api` that generate the CRD (`schema.from_json` reads them), so
one definition says what a field is called, its type and its default, for
the schema and for the code alike. What the API server adds around them (the
object's identity, finalizers, deletion) is `StoredObject`, which the
WukongSet's view shares. The stored object stays at hand as `body`,
read-only, for what takes an object as Kubernetes shapes it: owner
references, events, ownership checks.
"""

from dataclasses import dataclass
from typing import Any

from wukong.operator.api import FINALIZER, Condition, WukongSpec, WukongStatus
from wukong.operator.schema import from_json
from wukong.runtime import Object


@dataclass(frozen=True, kw_only=True)
class StoredObject:
    """What the API server keeps around an object's spec and status, as read."""

    body: Object  # as stored; never changed
    name: str
    namespace: str
    uid: str
    generation: int | None
    resource_version: str | None
    finalizers: tuple[str, ...]
    deletion_timestamp: str | None


def stored_fields(obj: Object) -> dict[str, Any]:
    """The `StoredObject` fields of a stored object, for a view's constructor."""
    metadata = obj["metadata"]
    return {
        "body": obj,
        "name": metadata["name"],
        "namespace": metadata.get("namespace") or "",
        "uid": metadata.get("uid") or "",
        "generation": metadata.get("generation"),
        "resource_version": metadata.get("resourceVersion"),
        "finalizers": tuple(metadata.get("finalizers") or ()),
        "deletion_timestamp": metadata.get("deletionTimestamp"),
    }


@dataclass(frozen=True, kw_only=True)
class WukongView(StoredObject):
    """One Wukong as read at the start of a reconcile (or after the controller's own write)."""

    spec: WukongSpec
    status: WukongStatus

    @property
    def has_finalizer(self) -> bool:
        return FINALIZER in self.finalizers

    @property
    def conditions(self) -> tuple[Condition, ...]:
        return tuple(self.status.conditions or ())


def parse_wukong(obj: Object) -> WukongView:
    """The view of a stored Wukong (its spec and status checked by the API server)."""
    return WukongView(
        **stored_fields(obj),
        spec=from_json(WukongSpec, obj.get("spec")),
        status=from_json(WukongStatus, obj.get("status")),
    )
