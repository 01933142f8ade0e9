"""Observers are registered once, with the manager, and hear from every controller:
also from one added while the manager runs, on a resource nothing watched before."""

from tests.integration.helpers import Recorder, eventually, running
from wukong.runtime import (
    Client,
    Controller,
    ControllerView,
    Manager,
    Outcome,
    ReconcileContext,
    Request,
    Resource,
    Result,
)
from wukong.runtime.resources import CONFIGMAPS

SECRETS = Resource(group="", version="v1", plural="secrets", kind="Secret")


class Reads:
    def __init__(self, resource: Resource) -> None:
        self.resource = resource

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        await ctx.client.get(self.resource, request.name, namespace=request.namespace)
        return Result()


class Observer(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.controllers: list[str] = []

    def controller_added(self, controller: ControllerView) -> None:
        self.controllers.append(controller.name)


async def test_a_controller_added_while_running_reports_to_the_observers(
    client: Client, namespace: str
) -> None:
    observer = Observer()
    manager = Manager(client=client, namespace=namespace, observers=[observer])
    manager.add(Controller(name="first", reconciler=Reads(CONFIGMAPS), primary=CONFIGMAPS))
    async with running(manager):
        await eventually(lambda: manager.ready, what="the first controller's cache synced")
        manager.add(Controller(name="late", reconciler=Reads(SECRETS), primary=SECRETS))
        await client.create(SECRETS, {"metadata": {"name": "s", "namespace": namespace}})

        def late_reconciled() -> bool:
            return any(e.outcome is Outcome.SUCCESS for e in observer.finished(controller="late"))

        await eventually(late_reconciled, what="the late controller's reconcile")

    assert observer.controllers == ["first", "late"]
    (finished,) = [e for e in observer.finished(controller="late") if e.outcome is Outcome.SUCCESS]
    assert finished.request == Request(namespace, "s")
    # Its API call carries the reconcile it was made for.
    (get,) = [c for c in observer.calls if c.reconcile is finished.context]
    assert (get.verb, get.resource, get.status_code, get.cancel_reason) == (
        "get",
        "secrets",
        200,
        None,
    )
