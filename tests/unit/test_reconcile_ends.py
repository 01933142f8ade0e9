"""Every reconcile ends, whenever it is cancelled: its key is freed and its end reported.

A reconcile cancelled in the same turn of the loop that started it never runs
its body (its task is cancelled before its first step); it must end all the
same, as one that ran and was cancelled does, or its key would stay reserved.
"""

import asyncio

from kubernetes_asyncio import client as k8s_client

from wukong.runtime import (
    CancelReason,
    Client,
    Controller,
    ControllerOptions,
    ReconcileContext,
    Request,
    Result,
    RuntimeObserver,
)
from wukong.runtime._running import RunningController
from wukong.runtime.observe import LifecycleEvent, Outcome, Step
from wukong.runtime.resources import CONFIGMAPS


class Records(RuntimeObserver):
    def __init__(self) -> None:
        self.events: list[LifecycleEvent] = []

    def reconcile(self, event: LifecycleEvent) -> None:
        self.events.append(event)


class Sleeps:
    def __init__(self) -> None:
        self.ran = 0

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        self.ran += 1
        await asyncio.sleep(30)
        return Result()


def _controller(reconciler: Sleeps, observer: Records) -> RunningController:
    client = Client(k8s_client.ApiClient(configuration=k8s_client.Configuration()))
    controller = Controller(
        name="sleeper",
        primary=CONFIGMAPS,
        reconciler=reconciler,
        options=ControllerOptions(max_concurrent_reconciles=2),
    )
    return RunningController(controller, client=client, observer=observer, reconcile_timeout=60)


async def test_a_reconcile_cancelled_before_its_first_step_ends_and_frees_its_key() -> None:
    reconciler, observer = Sleeps(), Records()
    running = _controller(reconciler, observer)
    running.queue.add(Request("ns", "a"))
    running.start()  # the reconcile's task exists; its first step is the loop's next turn
    assert running.active_workers == 1
    await running.stop(reason=CancelReason.SHUTDOWN, grace=5)  # cancels it in this turn
    assert reconciler.ran == 0
    finished = [e for e in observer.events if e.step is Step.FINISHED]
    assert [(e.outcome, e.reason) for e in finished] == [(Outcome.CANCELLED, CancelReason.SHUTDOWN)]
    assert running.active_workers == 0 and running.in_flight() == []


async def test_a_reconcile_cancelled_while_it_runs_ends_once() -> None:
    reconciler, observer = Sleeps(), Records()
    running = _controller(reconciler, observer)
    running.queue.add(Request("ns", "a"))
    running.start()
    await asyncio.sleep(0.05)  # its body is awaiting
    assert reconciler.ran == 1
    await running.stop(reason=CancelReason.SHUTDOWN, grace=5)
    await asyncio.sleep(0)  # a done callback would run now: it must not end it twice
    finished = [e for e in observer.events if e.step is Step.FINISHED]
    assert [(e.outcome, e.reason) for e in finished] == [(Outcome.CANCELLED, CancelReason.SHUTDOWN)]
    assert running.in_flight() == []
