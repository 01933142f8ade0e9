"""Why a reconcile runs: the queue carries each add's trigger to the reconcile, bounded.

On a virtual clock (looptime), without an API server: the queue's coalescing
and its bound, and the triggers a running controller gives its adds (requeues
of each outcome, `enqueue` from code, informer events and resyncs handed to
its handlers).
"""

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s_client
from prometheus_client import generate_latest

from tests.contract import RECONCILE_TRIGGERS, check_exposition
from tests.integration.helpers import RecordingObserver
from wukong.metrics import RuntimeMetrics
from wukong.runtime import (
    CancelReason,
    Client,
    Controller,
    ControllerOptions,
    ReconcileContext,
    Request,
    Result,
    RuntimeObserver,
    Watch,
)
from wukong.runtime._informer import EventHandler
from wukong.runtime._ratelimit import ItemExponentialFailureRateLimiter
from wukong.runtime._running import RunningController
from wukong.runtime._workqueue import MAX_TRIGGERS, WorkQueue
from wukong.runtime.observe import ReconcileLink, Step, Trigger, TriggerKind
from wukong.runtime.resources import CONFIGMAPS, SECRETS, Resource

pytestmark = pytest.mark.looptime


# -- the queue ---------------------------------------------------------------------------


async def test_coalesced_adds_keep_the_first_triggers_and_count_them_all() -> None:
    queue = WorkQueue(name="q")
    for index in range(MAX_TRIGGERS + 5):
        queue.add("a", trigger=index)
    ticket = queue.try_get()
    assert ticket is not None
    assert ticket.triggers == tuple(range(MAX_TRIGGERS))
    assert ticket.trigger_count == MAX_TRIGGERS + 5


async def test_adds_while_processing_make_the_next_tickets_triggers() -> None:
    queue = WorkQueue(name="q")
    queue.add("a", trigger="first")
    ticket = queue.try_get()
    assert ticket is not None and ticket.triggers == ("first",)
    queue.add("a", trigger="during-1")
    queue.add("a", trigger="during-2")
    assert queue.try_get() is None  # exclusive while processing
    queue.done("a")
    again = queue.try_get()
    assert again is not None
    assert (again.triggers, again.trigger_count) == (("during-1", "during-2"), 2)


async def test_a_delayed_add_coalesced_with_plain_adds_keeps_both_and_the_bound() -> None:
    queue = WorkQueue(name="q")
    queue.add_after("a", 1.0, trigger="requeue")
    queue.add_after("a", 0.5, trigger="sooner")  # reschedules: both kept, the first first
    for index in range(MAX_TRIGGERS):
        queue.add_after("a", 2.0, trigger=index)  # later: merged into the earlier schedule
    await asyncio.sleep(0.6)
    ticket = queue.try_get()
    assert ticket is not None
    assert ticket.triggers == ("requeue", "sooner", *range(MAX_TRIGGERS - 2))
    assert ticket.trigger_count == MAX_TRIGGERS + 2


async def test_adds_without_a_trigger_count_but_keep_nothing() -> None:
    queue = WorkQueue(name="q")
    queue.add("a")
    queue.add("a", trigger="event")
    ticket = queue.try_get()
    assert ticket is not None
    assert (ticket.triggers, ticket.trigger_count) == (("event",), 2)


# -- the running controller --------------------------------------------------------------


class Returns:
    """Returns each result in turn (then Result()); raises an exception given instead."""

    def __init__(self, *results: Any) -> None:
        self.results = list(results)
        self.seen: list[ReconcileContext] = []

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        self.seen.append(ctx)
        result = self.results.pop(0) if self.results else Result()
        if isinstance(result, BaseException):
            raise result
        if result == "hang":
            await asyncio.sleep(3600)
        assert isinstance(result, Result)
        return result


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    """A client for no cluster: these reconcilers make no calls."""
    async with Client(k8s_client.ApiClient(configuration=k8s_client.Configuration())) as api:
        yield api


class FakeInformer:
    """Records the handlers a controller binds, by resource."""

    def __init__(self) -> None:
        self.handlers: dict[str, EventHandler] = {}
        self.store = type("S", (), {"list_objects": staticmethod(lambda: [])})()

    def add_handler(self, handler: EventHandler) -> None:
        self.handlers[self.resource] = handler

    def informer_for(self, resource: Resource) -> "FakeInformer":
        self.resource = resource.plural
        return self


def _controller(
    reconciler: Returns,
    client: Client,
    informers: FakeInformer | None = None,
    observer: RuntimeObserver | None = None,
) -> RunningController:
    def secrets_of(obj: dict[str, Any]) -> list[Request]:
        return [Request(obj["metadata"]["namespace"], "app")]

    running = RunningController(
        Controller(
            name="c",
            reconciler=reconciler,
            primary=CONFIGMAPS,
            owns=[SECRETS] if informers is None else [],
            watches=[Watch(SECRETS, secrets_of)] if informers is not None else [],
            options=ControllerOptions(
                rate_limiter=ItemExponentialFailureRateLimiter(base_delay=1, max_delay=10),
                reconcile_timeout=5.0,
                cancelled_backoff_cap=1.0,
            ),
        ),
        client=client,
        observer=observer or RecordingObserver(),
        reconcile_timeout=5.0,
    )
    if informers is not None:
        running.bind(informer_for=informers.informer_for)  # type: ignore[arg-type]
    return running


def _kinds(ctx: ReconcileContext) -> list[TriggerKind]:
    return [trigger.kind for trigger in ctx.triggers]


async def test_each_requeue_names_its_kind_and_links_the_reconcile_that_asked(
    client: Client,
) -> None:
    reconciler = Returns(
        Result(requeue_after=1.0), Result(requeue=True), RuntimeError("broken"), "hang"
    )
    controller = _controller(reconciler, client)
    controller.start()
    controller.enqueue(Request("ns", "a"), source="webhook")
    await asyncio.sleep(1.0 + 1.0 + 2.0 + 5.0 + 1.5)  # after, backoffs, deadline, capped
    await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)
    seen = reconciler.seen
    assert [_kinds(ctx) for ctx in seen] == [
        [TriggerKind.MANUAL],
        [TriggerKind.REQUEUE_AFTER],
        [TriggerKind.REQUEUE],
        [TriggerKind.ERROR_BACKOFF],
        [TriggerKind.CANCELLED_BACKOFF],
    ]
    assert seen[0].triggers == (Trigger(TriggerKind.MANUAL, source="webhook"),)
    assert seen[0].link is None
    for earlier, later in itertools.pairwise(seen):
        link = later.triggers[0].link
        assert isinstance(link, ReconcileLink)
        assert (link.controller, link.reconcile_id) == ("c", earlier.reconcile_id)
        assert later.link is link
        assert later.trigger_count == 1
    assert str(seen[1].triggers[0]) == f"requeue_after by reconcile {seen[0].reconcile_id}"


def _object(name: str, version: str, **metadata: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": version, **metadata}}


async def test_events_name_the_object_the_event_and_the_mapping(client: Client) -> None:
    informers = FakeInformer()
    reconciler = Returns()
    controller = _controller(reconciler, client, informers)
    primary, watched = informers.handlers["configmaps"], informers.handlers["secrets"]
    assert primary.on_add and primary.on_update and primary.on_resync and primary.on_delete
    assert watched.on_update is not None
    old, new = _object("app", "1"), _object("app", "2")
    primary.on_add(old)
    primary.on_update(old, new)
    watched.on_update(_object("creds", "7"), _object("creds", "8"))  # both map to one key
    primary.on_resync(new)
    controller.start()
    await asyncio.sleep(0.1)
    await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)
    (ctx,) = reconciler.seen
    assert ctx.trigger_count == 4
    assert [str(trigger) for trigger in ctx.triggers] == [
        "ADDED ConfigMap ns/app rv=1 via primary",
        "MODIFIED ConfigMap ns/app rv=2 via primary",
        "MODIFIED Secret ns/creds rv=8 via map:_controller.<locals>.secrets_of",
        "sync_period ConfigMap ns/app rv=2 via primary",
    ]
    assert ctx.triggers[3].kind is TriggerKind.SYNC_PERIOD


async def test_deleting_the_primary_cancels_its_reconcile_and_names_the_delete(
    client: Client,
) -> None:
    informers = FakeInformer()
    reconciler = Returns("hang")
    controller = _controller(reconciler, client, informers)
    controller.start()
    on_delete: Callable[[dict[str, Any]], None] | None = informers.handlers["configmaps"].on_delete
    assert on_delete is not None
    controller.enqueue(Request("ns", "app"))
    await asyncio.sleep(0.1)
    on_delete(_object("app", "3"))
    await asyncio.sleep(0.1)
    await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)
    first, second = reconciler.seen
    assert first.cancel_reason is CancelReason.DELETED
    # The delete, queued while the reconcile it cancelled unwound (whose own
    # backoff requeue is still scheduled).
    assert [str(t) for t in second.triggers] == ["DELETED ConfigMap ns/app rv=3 via primary"]
    assert second.triggers[0].event == "DELETED"


async def test_started_events_carry_the_triggers(client: Client) -> None:
    reconciler = Returns()
    controller = _controller(reconciler, client)
    recorder = controller._observer
    assert isinstance(recorder, RecordingObserver)
    controller.start()
    controller.enqueue(Request("ns", "a"))
    await asyncio.sleep(0.1)
    await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)
    started = [e for e in recorder.events if e.step is Step.STARTED]
    assert [e.context.triggers for e in started] == [(Trigger(TriggerKind.MANUAL, source="code"),)]


# -- the contract and the metric ---------------------------------------------------------


def test_the_trigger_kinds_are_the_contract_and_the_doc_names_them() -> None:
    assert {str(kind) for kind in TriggerKind} == RECONCILE_TRIGGERS
    doc = (Path(__file__).resolve().parents[2] / "docs/contract.md").read_text()
    assert all(f"| `{kind}` |" in doc for kind in RECONCILE_TRIGGERS)


def test_the_checker_names_a_trigger_outside_the_contract() -> None:
    text = (
        "# TYPE wukong_reconcile_triggers_total counter\n"
        'wukong_reconcile_triggers_total{controller="c",trigger="cron"} 1.0\n'
    )
    assert (
        "wukong_reconcile_triggers_total: triggers outside the contract: ['cron']"
        in check_exposition(text)
    )


async def test_the_metric_starts_at_zero_and_counts_every_trigger(client: Client) -> None:
    metrics = RuntimeMetrics()
    reconciler = Returns(Result(requeue_after=1.0))
    controller = _controller(reconciler, client, observer=metrics)
    metrics.controller_added(controller)
    registry = metrics.metrics.registry

    def count(trigger: str) -> float | None:
        return registry.get_sample_value(
            "wukong_reconcile_triggers_total", {"controller": "c", "trigger": trigger}
        )

    assert {kind: count(kind) for kind in RECONCILE_TRIGGERS} == dict.fromkeys(
        RECONCILE_TRIGGERS, 0.0
    )
    assert check_exposition(generate_latest(registry).decode()) == []
    for _ in range(MAX_TRIGGERS + 2):
        controller.enqueue(Request("ns", "a"))  # one reconcile, coalesced past the bound
    controller.start()
    await asyncio.sleep(1.5)  # and its requeue_after
    await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)
    assert [ctx.trigger_count for ctx in reconciler.seen] == [MAX_TRIGGERS + 2, 1]
    assert count("manual") == MAX_TRIGGERS + 2
    assert count("requeue_after") == 1
    assert count("event") == 0
