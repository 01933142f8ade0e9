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

The names below are the API; modules with a leading underscore are machinery
(work queue, fan-out of observer events, the running state of controllers,
the event-loop watchdog) and may change without notice. See
docs/architecture.md for how the parts fit.
"""

from wukong.runtime.cancellation import CancelReason
from wukong.runtime.client import Client, Object
from wukong.runtime.context import (
    DEFAULT_RECONCILE_TIMEOUT,
    ReconcileContext,
    Request,
    Result,
)
from wukong.runtime.controller import Controller, ControllerOptions, Reconciler, Watch
from wukong.runtime.errors import (
    AlreadyExists,
    ApiError,
    ApiTimeout,
    Conflict,
    Gone,
    Invalid,
    NotFound,
)
from wukong.runtime.events import EventRecorder
from wukong.runtime.leader import LeaderElectionConfig
from wukong.runtime.manager import Manager
from wukong.runtime.observer import (
    ApiCall,
    ControllerView,
    LifecycleEvent,
    Outcome,
    RuntimeObserver,
    Step,
    WebhookReview,
)
from wukong.runtime.resources import Resource

__all__ = [
    "DEFAULT_RECONCILE_TIMEOUT",
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
    "EventRecorder",
    "Gone",
    "Invalid",
    "LeaderElectionConfig",
    "LifecycleEvent",
    "Manager",
    "NotFound",
    "Object",
    "Outcome",
    "ReconcileContext",
    "Reconciler",
    "Request",
    "Resource",
    "Result",
    "RuntimeObserver",
    "Step",
    "Watch",
    "WebhookReview",
]
