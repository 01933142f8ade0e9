"""Observers are registered once, with the manager, and hear from every controller:
also from one added while the manager runs, on a resource nothing watched before.
An observer that raises is logged once per method and counted; the reconcile and the
API call that reported to it go on."""

import pytest

from tests.integration.helpers import RecordingObserver, running
from tests.polling import eventually
from wukong.runtime import (
    Client,
    Controller,
    Manager,
    ManagerOptions,
    ReconcileContext,
    Request,
    Resource,
    Result,
    RuntimeObserver,
)
from wukong.runtime.observe import ApiCall, ControllerView, LifecycleEvent, Outcome
from wukong.runtime.resources import CONFIGMAPS, SECRETS


class Reads:
    def __init__(self, resource: Resource) -> None:
        self.resource = resource

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        await ctx.client.get(self.resource, request.name, namespace=request.namespace)
        return Result()


class Observer(RecordingObserver):
    def __init__(self) -> None:
        super().__init__()
        self.controllers: list[str] = []

    def controller_added(self, controller: ControllerView) -> None:
        self.controllers.append(controller.name)


async def test_a_controller_added_while_running_reports_to_the_observers(
    client: Client, namespace: str
) -> None:
    observer = Observer()
    manager = Manager(
        client=client, observers=[observer], options=ManagerOptions(namespace=namespace)
    )
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


class Raises(RuntimeObserver):
    name = "raises"

    def reconcile(self, event: LifecycleEvent) -> None:
        raise RuntimeError("observer bug")

    def api_call(self, call: ApiCall) -> None:
        raise RuntimeError("observer bug")


async def test_an_observer_that_raises_breaks_no_reconcile_and_no_api_call(
    client: Client, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    observer = Observer()
    manager = Manager(
        client=client, observers=[Raises(), observer], options=ManagerOptions(namespace=namespace)
    )
    manager.add(Controller(name="cms", reconciler=Reads(CONFIGMAPS), primary=CONFIGMAPS))
    async with running(manager):
        await client.create(CONFIGMAPS, {"metadata": {"name": "cm", "namespace": namespace}})

        def reconciled() -> bool:
            return any(e.outcome is Outcome.SUCCESS for e in observer.finished(controller="cms"))

        await eventually(reconciled, what="a successful reconcile despite the raising observer")

    # The healthy observer saw the reconcile's GET succeed.
    (finished,) = [e for e in observer.finished(controller="cms") if e.outcome is Outcome.SUCCESS]
    (get,) = [c for c in observer.calls if c.reconcile is finished.context]
    assert (get.verb, get.status_code, get.error) == ("get", 200, None)
    # Every event the broken one was given counted as a failure; each method logged once.
    assert manager.observer_failures == len(observer.events) + len(observer.calls)
    logged = sorted(
        record.getMessage().split(";")[0]
        for record in caplog.records
        if record.name == "wukong.runtime.observer"
    )
    assert logged == ["observer raises failed in api_call", "observer raises failed in reconcile"]
