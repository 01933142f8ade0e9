"""controller-runtime semantics on asyncio: the API an operator author uses.

    from wukong.runtime import Controller, Manager, Request, Result

    class Reconciler:
        async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
            obj = await ctx.client.get(WIDGETS, request.name, namespace=request.namespace)
            ...
            return Result(requeue_after=30)

    manager = Manager(client=await Client.from_environment(), observers=[...])
    manager.add(Controller(name="widget", reconciler=Reconciler(), primary=WIDGETS))
    await manager.run()

The names below are the API, with four public modules beside them: the kinds
(`wukong.runtime.resources` for Kubernetes', `wukong.runtime.apis` for
KubeVirt's, CDI's and Multus'), serving HTTPS (`wukong.runtime.serving`) and
the probe points the node agent reads (`wukong.runtime.probes`). Every module
with a leading underscore is machinery and may change without notice. See
docs/architecture.md for how the parts fit.
"""

from wukong.runtime._cache import Store
from wukong.runtime._cancellation import FAILURE_REASONS, CancelReason, is_failure
from wukong.runtime._client import Client, Object
from wukong.runtime._context import (
    DEFAULT_RECONCILE_TIMEOUT,
    ReconcileContext,
    ReconcileLink,
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
from wukong.runtime._manager import DEFAULT_SYNC_PERIOD, Manager
from wukong.runtime._observer import (
    ApiCall,
    ControllerView,
    LifecycleEvent,
    Outcome,
    RuntimeObserver,
    Step,
    WebhookReview,
)
from wukong.runtime._owners import controller_reference, controller_uid, is_controlled_by
from wukong.runtime._quantity import parse_quantity
from wukong.runtime._webhook import Admission, AdmissionRequest, AdmitOnError, Validator
from wukong.runtime.resources import Resource

__all__ = [
    "DEFAULT_RECONCILE_TIMEOUT",
    "DEFAULT_SYNC_PERIOD",
    "FAILURE_REASONS",
    "Admission",
    "AdmissionRequest",
    "AdmitOnError",
    "AlreadyExists",
    "ApiCall",
    "ApiError",
    "ApiTimeout",
    "CancelReason",
    "Client",
    "Conflict",
    "Controller",
    "ControllerOptions",
    "ControllerView",
    "EventHandler",
    "EventRecorder",
    "Gone",
    "Informer",
    "Invalid",
    "LeaderElectionConfig",
    "LifecycleEvent",
    "Manager",
    "MapFunc",
    "NotFound",
    "Object",
    "Outcome",
    "ReconcileContext",
    "ReconcileLink",
    "Reconciler",
    "Request",
    "Resource",
    "Result",
    "RuntimeObserver",
    "Step",
    "Store",
    "TerminalError",
    "Validator",
    "Watch",
    "WebhookReview",
    "controller_reference",
    "controller_uid",
    "is_controlled_by",
    "is_failure",
    "parse_quantity",
]
