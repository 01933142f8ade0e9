"""controller-runtime semantics on asyncio: the API an operator author uses.

    from wukong.runtime import Controller, Manager, Request, Result

    class Reconciler:
        async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
            obj = await ctx.client.get(WIDGETS, request.name, namespace=request.namespace)
            ...
            return Result(requeue_after=30)

    options = ManagerOptions(namespace="widgets")  # every field documented, all defaulted
    manager = Manager(client=await Client.from_environment(), options=options)
    manager.add(Controller(name="widget", reconciler=Reconciler(), primary=WIDGETS))
    await manager.run()

The names below are the API (at most 40, each documented), with five public
modules beside them: the kinds (`wukong.runtime.resources` for Kubernetes',
`wukong.runtime.apis` for KubeVirt's, CDI's and Multus'), serving HTTPS
(`wukong.runtime.serving`), what observers are told (`wukong.runtime.observe`)
and the probe points the node agent reads (`wukong.runtime.probes`). Every module
with a leading underscore is machinery and may change without notice. See
docs/architecture.md for how the parts fit.
"""

from wukong.runtime._cache import Store
from wukong.runtime._cancellation import CancelReason
from wukong.runtime._client import Client, Object
from wukong.runtime._context import (
    DEFAULT_RECONCILE_TIMEOUT,
    ReconcileContext,
    Request,
    Result,
)
from wukong.runtime._controller import Controller, ControllerOptions, MapFunc, Reconciler, Watch
from wukong.runtime._errors import (
    AlreadyExists,
    ApiError,
    ApiTimeout,
    Conflict,
    Gone,
    Invalid,
    NotFound,
    TerminalError,
)
from wukong.runtime._events import EventRecorder
from wukong.runtime._informer import EventHandler, Informer
from wukong.runtime._leader import LeaderElectionConfig
from wukong.runtime._manager import DEFAULT_SYNC_PERIOD, Manager, ManagerOptions
from wukong.runtime._observer import RuntimeObserver
from wukong.runtime._owners import controller_reference, controller_uid, is_controlled_by
from wukong.runtime._quantity import parse_quantity
from wukong.runtime._shards import ShardSpace
from wukong.runtime._webhook import Admission, AdmissionRequest, AdmitOnError, Validator
from wukong.runtime.resources import Resource

__all__ = [
    "DEFAULT_RECONCILE_TIMEOUT",
    "DEFAULT_SYNC_PERIOD",
    "Admission",
    "AdmissionRequest",
    "AdmitOnError",
    "AlreadyExists",
    "ApiError",
    "ApiTimeout",
    "CancelReason",
    "Client",
    "Conflict",
    "Controller",
    "ControllerOptions",
    "EventHandler",
    "EventRecorder",
    "Gone",
    "Informer",
    "Invalid",
    "LeaderElectionConfig",
    "Manager",
    "ManagerOptions",
    "MapFunc",
    "NotFound",
    "Object",
    "ReconcileContext",
    "Reconciler",
    "Request",
    "Resource",
    "Result",
    "RuntimeObserver",
    "ShardSpace",
    "Store",
    "TerminalError",
    "Validator",
    "Watch",
    "controller_reference",
    "controller_uid",
    "is_controlled_by",
    "parse_quantity",
]
