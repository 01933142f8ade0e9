"""Creating the objects a Wukong owns: one name, one owner, created once.

Every dependent gets a deterministic name, the `vm.novasphere.dev/wukong`
label and the Wukong as controller owner. Creation is idempotent: a reconcile
cancelled right after a create reached the server finds the object on its
next attempt, in the cache or as AlreadyExists, and never makes a second one.
"""

from typing import Any

from wukong.operator.api import WUKONG_LABEL, WUKONGS
from wukong.runtime import AlreadyExists, Object, ReconcileContext, controller_reference
from wukong.runtime.resources import Resource


def owned_object(wukong: Object, resource: Resource, name: str, **fields: Any) -> Object:
    """A `resource` object named `name`, owned and labelled by `wukong`, with `fields`."""
    return {
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": {
            "name": name,
            "namespace": wukong["metadata"]["namespace"],
            "labels": {WUKONG_LABEL: wukong["metadata"]["name"]},
            "ownerReferences": [controller_reference(wukong, resource=WUKONGS)],
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
