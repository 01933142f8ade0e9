"""Owner references: who created an object, and whether it is ours to delete.

A controller marks what it creates with a *controller* ownerReference to the
primary object (by uid, so a new object of the same name is a different owner).
Deleting only what carries our uid is what keeps cleanup from touching objects
a user or another controller made under a name we would have used.
"""

from wukong.runtime._client import Object
from wukong.runtime.resources import Resource


def controller_reference(owner: Object, *, resource: Resource) -> dict[str, object]:
    """A controller ownerReference pointing at `owner`, an object of `resource`."""
    metadata = owner["metadata"]
    return {
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controller_uid(obj: Object) -> str | None:
    """The uid of the object's controller, if it has one."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            uid = ref.get("uid")
            return str(uid) if uid else None
    return None


def is_controlled_by(obj: Object, owner: Object) -> bool:
    """Whether `owner` (by uid) is the controller of `obj`: ours to update or delete."""
    return controller_uid(obj) == str(owner["metadata"].get("uid"))
