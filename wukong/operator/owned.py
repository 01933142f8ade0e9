"""Creating the objects a Wukong owns: one name, one owner, created once.

Every dependent gets a deterministic name (`names`), the
`vm.novasphere.dev/wukong` label and the Wukong as controller owner. Creation
is idempotent: a reconcile cancelled right after a create reached the server
finds the object on its next attempt, in the cache or as AlreadyExists, and
never makes a second one.

An object of a dependent's name that the Wukong does not control (made by
hand, by another controller, or by another Wukong) is never adopted, patched
or deleted: it is a `NameConflict` (`name_conflict`), which stops the Wukong
with `Ready=False` until someone renames or removes one of the two. Every
patch of a dependent carries the resourceVersion it was decided on
(`optimistic_lock`), and every delete its uid, so an object deleted and
recreated under the same name since the cache saw it is never written by
mistake.
"""

from typing import Any

from wukong.operator.api import WUKONG_LABEL, WUKONGS
from wukong.operator.steps import Problem
from wukong.operator.views import WukongView
from wukong.runtime import AlreadyExists, Object, ReconcileContext, controller_reference
from wukong.runtime.resources import Resource


def owned_object(wukong: WukongView, resource: Resource, name: str, **fields: Any) -> Object:
    """A `resource` object named `name`, owned and labelled by `wukong`, with `fields`."""
    return {
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": {
            "name": name,
            "namespace": wukong.namespace,
            "labels": {WUKONG_LABEL: wukong.name},
            "ownerReferences": [controller_reference(wukong.body, resource=WUKONGS)],
        },
        **fields,
    }


async def create_once(ctx: ReconcileContext, resource: Resource, body: Object) -> bool:
    """Create `body`; False if it already existed (an earlier attempt created it)."""
    try:
        await ctx.client.create(resource, body)
    except AlreadyExists:
        return False
    return True


def name_conflict(what: str, resource: Resource, existing: Object) -> Problem:
    """The problem of a dependent's name taken by an object the Wukong does not control."""
    metadata = existing["metadata"]
    return Problem(
        "NameConflict",
        f"{what}: {resource.kind} {metadata['name']} exists and is {_controller_of(existing)}; "
        "Wukong never adopts or changes it: delete it or rename the Wukong",
    )


def optimistic_lock(existing: Object) -> dict[str, Any]:
    """Patch fields that make the server refuse the patch (`Conflict`) if `existing` changed
    or was replaced since it was read; the reconcile then runs again on what is there."""
    return {"metadata": {"resourceVersion": existing["metadata"]["resourceVersion"]}}


def _controller_of(obj: Object) -> str:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return f"controlled by {ref.get('kind')} {ref.get('name')} (uid {ref.get('uid')})"
    return "not controlled by anyone (no owner)"
