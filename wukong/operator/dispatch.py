"""A reconcile's entry: the controller's own object read, parsed, and handed to its work.

Shared by the Wukong and WukongSet controllers. The object is read from the
informer's cache (no API call), parsed once into its typed view
(`views.StoredObject`), then converged, or deleted while its
`deletionTimestamp` is set. A Conflict on the way means someone wrote the
object since the cache saw it: normal, so the reconcile is simply run again
with a fresh copy rather than counted as an error.
"""

from collections.abc import Awaitable, Callable
from typing import TypeVar

from wukong.operator.views import StoredObject
from wukong.runtime import Conflict, Object, ReconcileContext, Request, Result, Store

View = TypeVar("View", bound=StoredObject)


async def dispatch_stored(
    ctx: ReconcileContext,
    request: Request,
    *,
    cache: Store,
    parse: Callable[[Object], View],
    converge: Callable[[ReconcileContext, View], Awaitable[Result]],
    delete: Callable[[ReconcileContext, View], Awaitable[Result]],
    gone: Callable[[Request], None] | None = None,
) -> Result:
    """Reconcile the object `request` names, as `cache` holds it.

    `gone` is told of an object no longer in the cache (nothing else to do);
    a live object is `converge`d, one being deleted is `delete`d, and a
    Conflict from either asks for a requeue.
    """
    stored = cache.get_by_name(request.namespace, request.name)
    if stored is None:
        if gone is not None:
            gone(request)
        return Result()
    view = parse(stored)
    try:
        if view.deletion_timestamp:
            return await delete(ctx, view)
        return await converge(ctx, view)
    except Conflict:
        ctx.logger.debug("conflict writing %s; retrying with a fresh copy", request)
        return Result(requeue=True)
