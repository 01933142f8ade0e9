"""A controller's writes of its own object: its status when it changed, its finalizer.

Shared by the Wukong and WukongSet controllers, each working on a view of its
object as read at the start of the reconcile (`views.StoredObject`). The
status is compared with the one stored and written only when it differs (a
write would only wake every watcher for nothing); finalizers are written with
the resourceVersion read, so a concurrent change is a Conflict, not a lost
update. An object deleted meanwhile is no error: its delete event brings the
next reconcile.
"""

from typing import Any

from wukong.operator.views import StoredObject
from wukong.runtime import NotFound, Object, ReconcileContext
from wukong.runtime.resources import Resource


async def write_status(
    ctx: ReconcileContext, resource: Resource, view: StoredObject, status: dict[str, Any]
) -> None:
    """Merge `status` into the stored status, unless every field is already so."""
    current = view.body.get("status") or {}
    if all(current.get(key) == value for key, value in status.items()):
        return
    try:
        await ctx.client.patch_status(
            resource, view.name, {"status": status}, namespace=view.namespace
        )
    except NotFound:
        pass


async def add_finalizer(
    ctx: ReconcileContext, resource: Resource, view: StoredObject, finalizer: str
) -> Object:
    """The object as written with `finalizer` added."""
    return await _write_finalizers(ctx, resource, view, [*view.finalizers, finalizer])


async def remove_finalizer(
    ctx: ReconcileContext, resource: Resource, view: StoredObject, finalizer: str
) -> None:
    """Let the object go: `finalizer` removed (an object already gone is fine)."""
    try:
        await _write_finalizers(ctx, resource, view, [f for f in view.finalizers if f != finalizer])
    except NotFound:
        pass


async def _write_finalizers(
    ctx: ReconcileContext, resource: Resource, view: StoredObject, finalizers: list[str]
) -> Object:
    patch = {"metadata": {"finalizers": finalizers, "resourceVersion": view.resource_version}}
    return await ctx.client.patch(resource, view.name, patch, namespace=view.namespace)
