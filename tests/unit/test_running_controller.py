"""A controller's running state on a virtual clock: deadlines, outcomes and requeue backoff.

No API server is involved: the reconcilers here only wait, so looptime's
virtual clock runs deadlines and backoffs of minutes in no real time.
"""

import asyncio
import contextvars
import gc
import logging
import weakref
from collections.abc import AsyncIterator, Callable

import pytest
from kubernetes_asyncio import client as k8s_client

from tests.integration.helpers import RecordingObserver
from tests.running import configmap_controller
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
from wukong.runtime import _running as running_module
from wukong.runtime._context import current_reconcile
from wukong.runtime._fanout import ObserverFanout
from wukong.runtime._ratelimit import ItemExponentialFailureRateLimiter
from wukong.runtime._running import RunningController
from wukong.runtime.observe import LifecycleEvent, Outcome, Step
from wukong.runtime.resources import CONFIGMAPS

pytestmark = pytest.mark.looptime


class Hangs:
    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        await asyncio.sleep(3600)
        return Result()


class Fails:
    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        raise RuntimeError("broken")


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    """A client for no cluster: these reconcilers make no calls."""
    async with Client(k8s_client.ApiClient(configuration=k8s_client.Configuration())) as api:
        yield api


def _running(
    reconciler: object, recorder: RecordingObserver, client: Client, **options: float
) -> RunningController:
    return RunningController(
        Controller(
            name="c",
            reconciler=reconciler,  # type: ignore[arg-type]
            primary=CONFIGMAPS,
            options=ControllerOptions(
                # A slow backoff: 100 s after the first failure, doubling.
                rate_limiter=ItemExponentialFailureRateLimiter(base_delay=100, max_delay=1e4),
                **options,  # type: ignore[arg-type]
            ),
        ),
        client=client,
        observer=recorder,
        reconcile_timeout=2.0,
    )


async def test_a_cancelled_reconcile_is_retried_within_the_cap(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wukong")
    recorder = RecordingObserver()
    controller = _running(Hangs(), recorder, client, cancelled_backoff_cap=5.0)
    controller.start()
    controller.enqueue(Request("ns", "a"))
    start = asyncio.get_running_loop().time()
    await asyncio.sleep(2.0 + 5.0 + 2.0 + 1.0)  # deadline, capped backoff, deadline again
    await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)

    finished = recorder.finished()
    assert [e.reason for e in finished[:2]] == [CancelReason.DEADLINE_EXCEEDED] * 2
    requeued = recorder.steps(Step.REQUEUED)
    # The limiter asked for 100 s; a cancellation is retried after the 5 s cap.
    assert requeued[0].rate_limited and requeued[0].requeue_after == 5.0
    second_start = recorder.steps(Step.STARTED)[1].context.started
    assert second_start - start == pytest.approx(7.0)
    assert any("again in 5.000s" in r.getMessage() for r in caplog.records)


async def test_an_error_keeps_the_rate_limiters_backoff(client: Client) -> None:
    recorder = RecordingObserver()
    controller = _running(Fails(), recorder, client, cancelled_backoff_cap=5.0)
    controller.start()
    controller.enqueue(Request("ns", "a"))
    await asyncio.sleep(1.0)
    await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)

    assert [e.outcome for e in recorder.finished()] == [Outcome.ERROR]
    requeued = recorder.steps(Step.REQUEUED)
    assert requeued[0].rate_limited and requeued[0].requeue_after == 100.0


async def test_started_and_finished_carry_each_field_under_its_name(client: Client) -> None:
    """Both are built from all their fields in order, with no count checked
    (`event_of`): a field out of place would land under another's name."""
    recorder = RecordingObserver()
    controller = _running(Fails(), recorder, client)
    controller.start()
    controller.enqueue(Request("ns", "a"))
    await asyncio.sleep(1.0)
    await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)

    started = recorder.steps(Step.STARTED)[0]
    assert started._asdict() == {
        "step": Step.STARTED,
        "context": started.context,
        "outcome": None,
        "result": None,
        "error": None,
        "reason": None,
        "duration": None,
        "panicked": False,
        "requeue_after": None,
        "rate_limited": False,
    }
    (finished,) = recorder.finished()
    assert isinstance(finished.error, RuntimeError)
    assert finished._asdict() == {
        "step": Step.FINISHED,
        "context": started.context,
        "outcome": Outcome.ERROR,
        "result": None,
        "error": finished.error,
        "reason": None,
        "duration": finished.duration,
        "panicked": True,  # an unexpected exception: a bug
        "requeue_after": None,
        "rate_limited": False,
    }
    assert finished.duration is not None and finished.duration >= 0


class TakesOneSecond:
    def __init__(self) -> None:
        self.running = 0
        self.most = 0

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(1.0)
        finally:
            self.running -= 1
        return Result()


async def test_at_most_max_concurrent_reconciles_run_and_each_key_is_reconciled(
    client: Client,
) -> None:
    recorder = RecordingObserver()
    reconciler = TakesOneSecond()
    controller = _running(reconciler, recorder, client, max_concurrent_reconciles=2)
    for index in range(3):
        controller.enqueue(Request("ns", f"before-{index}"))  # queued before start
    controller.start()
    for index in range(2):
        controller.enqueue(Request("ns", f"after-{index}"))
    await asyncio.sleep(2.5)
    assert len(recorder.finished()) == 4  # two rounds of two, one still running
    await asyncio.sleep(1.0)
    await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)

    assert reconciler.most == 2
    assert [e.context.request.name for e in recorder.steps(Step.STARTED)] == [
        "before-0",
        "before-1",
        "before-2",
        "after-0",
        "after-1",
    ]
    assert {e.outcome for e in recorder.finished()} == {Outcome.SUCCESS}


class TakesOneSecondPerNamespace:
    """Counts the reconciles in flight in each namespace, and the most there ever were."""

    def __init__(self) -> None:
        self.running: dict[str, int] = {}
        self.most: dict[str, int] = {}

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        namespace = request.namespace
        self.running[namespace] = self.running.get(namespace, 0) + 1
        self.most[namespace] = max(self.most.get(namespace, 0), self.running[namespace])
        try:
            await asyncio.sleep(1.0)
        finally:
            self.running[namespace] -= 1
        return Result()


@pytest.mark.parametrize(
    ("mode", "options", "busy_at_once", "quiet_starts"),
    [
        # No worker idles for the cap while only the busy namespace has work; once the
        # quiet key waits, it goes before the busy namespace, which is over its cap.
        ("cap", {"max_concurrent_reconciles_per_namespace": 2}, 3, {3}),
        # Every worker is busy: the quiet key takes one of the next round's three turns.
        ("fair", {}, 3, {3, 4, 5}),
        # One FIFO: the quiet key waits behind the whole backlog.
        ("unfair", {"fair_namespaces": False}, 3, {10}),
    ],
)
async def test_where_a_quiet_namespace_starts_by_queue_mode(
    client: Client,
    mode: str,
    options: dict[str, float],
    busy_at_once: int,
    quiet_starts: set[int],
) -> None:
    """Three workers take ten one-second keys of one namespace; then a key of another
    namespace comes: where it starts among all reconciles, by queue mode."""
    recorder = RecordingObserver()
    reconciler = TakesOneSecondPerNamespace()
    controller = _running(reconciler, recorder, client, max_concurrent_reconciles=3, **options)
    for index in range(10):
        controller.enqueue(Request("busy", f"vm-{index}"))
    controller.start()
    await asyncio.sleep(0.5)  # the busy namespace's first reconciles are in flight
    controller.enqueue(Request("quiet", "vm"))
    await asyncio.sleep(5.0)  # the busy keys take four rounds
    await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)

    started = [e.context.request for e in recorder.steps(Step.STARTED)]
    assert len(started) == 11, mode
    assert reconciler.most == {"busy": busy_at_once, "quiet": 1}
    assert started.index(Request("quiet", "vm")) in quiet_starts


def test_a_namespace_cap_needs_fair_namespaces() -> None:
    with pytest.raises(ValueError, match="needs fair_namespaces"):
        ControllerOptions(fair_namespaces=False, max_concurrent_reconciles_per_namespace=2)
    with pytest.raises(ValueError, match="at least 1"):
        ControllerOptions(max_concurrent_reconciles_per_namespace=0)


async def test_stop_cancels_reconciles_in_flight_and_waits_for_them(client: Client) -> None:
    recorder = RecordingObserver()
    controller = _running(Hangs(), recorder, client, max_concurrent_reconciles=2)
    controller.start()
    for name in ("a", "b", "c"):
        controller.enqueue(Request("ns", name))
    await asyncio.sleep(0.5)
    await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)

    # The two in flight unwound and were reported before stop returned; the
    # third was never started.
    assert [e.reason for e in recorder.finished()] == [CancelReason.SHUTDOWN] * 2
    assert len(recorder.steps(Step.STARTED)) == 2
    assert controller.active_workers == 0


class CountsItsRuns:
    def __init__(self) -> None:
        self.ran = 0

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        self.ran += 1
        await asyncio.sleep(3600)
        return Result()


async def test_a_worker_stopped_before_its_first_step_takes_no_key(client: Client) -> None:
    """A worker takes its key at its first step: a controller stopped before it
    starts no reconcile, and the worker ends without one."""
    recorder, reconciler = RecordingObserver(), CountsItsRuns()
    controller = _running(reconciler, recorder, client)
    controller.enqueue(Request("ns", "a"))
    controller.start()  # the worker exists; its first step would be the loop's next turn
    workers = [t for t in asyncio.all_tasks() if t.get_name() == "reconcile c"]
    assert len(workers) == 1
    await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)
    await asyncio.sleep(0)  # its first step
    assert workers[0].done() and workers[0].exception() is None
    assert reconciler.ran == 0
    assert recorder.steps(Step.STARTED) == [] and recorder.finished() == []
    assert controller.active_workers == 0 and controller.in_flight() == []


async def test_a_reconcile_cancelled_while_it_runs_ends_once(client: Client) -> None:
    recorder, reconciler = RecordingObserver(), CountsItsRuns()
    controller = _running(reconciler, recorder, client)
    controller.enqueue(Request("ns", "a"))
    controller.start()
    await asyncio.sleep(0.05)  # its body is awaiting
    assert reconciler.ran == 1
    await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)
    await asyncio.sleep(0)  # the worker ends after its cancelled reconcile: nothing ends it twice
    assert len(recorder.finished()) == 1
    assert controller.in_flight() == []


class HangsUntilCancelled:
    """Key "quick" ends after 0.5 s; every other key waits until it is cancelled."""

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        await asyncio.sleep(0.5 if request.name == "quick" else 3600)
        return Result()


async def test_each_reconcile_is_cancelled_at_its_own_deadline(client: Client) -> None:
    """One alarm serves every deadline of a controller: a reconcile that ended before
    its deadline takes nothing with it, and each later one is cut at its own time."""
    recorder = RecordingObserver()
    controller = _running(HangsUntilCancelled(), recorder, client, max_concurrent_reconciles=3)
    controller.start()
    start = asyncio.get_running_loop().time()
    controller.enqueue(Request("ns", "quick"))  # its deadline (2.0) was the alarm's first
    await asyncio.sleep(0.25)
    controller.enqueue(Request("ns", "a"))  # deadline 2.25
    await asyncio.sleep(0.5)
    controller.enqueue(Request("ns", "b"))  # deadline 2.75
    await asyncio.sleep(3.0)
    await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)

    ended = {
        e.context.request.name: (e.outcome, e.reason, e.context.started + e.duration - start)
        for e in recorder.finished()
    }
    assert ended["quick"][:2] == (Outcome.SUCCESS, None)
    assert ended["a"][:2] == ended["b"][:2] == (Outcome.CANCELLED, CancelReason.DEADLINE_EXCEEDED)
    assert ended["a"][2] == pytest.approx(2.25, abs=0.01)
    assert ended["b"][2] == pytest.approx(2.75, abs=0.01)


async def test_a_reconcile_that_ended_is_freed_without_the_garbage_collector(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing of an ended reconcile is left in a reference cycle (its contextvars named
    it; its logger, kept on it, did too): reference counting frees it, with no
    collector pass on the reconcile's path, DEBUG lines and the reconciler's own
    included."""
    caplog.set_level(logging.DEBUG, logger="wukong")
    seen: list[weakref.ref[ReconcileContext]] = []

    class Remembers:
        async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
            seen.append(weakref.ref(ctx))
            ctx.logger.info("reconciling")
            return Result()

    controller = configmap_controller(Remembers(), client)
    gc.disable()
    try:
        controller.start()
        controller.enqueue(Request("ns", "a"))
        await asyncio.sleep(0.1)
        assert len(seen) == 1
        assert seen[0]() is None
        assert "reconciling" in caplog.messages
    finally:
        gc.enable()
        await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)


class Gated(RecordingObserver):
    """Acts on reconciles only while `open` (as the node agent's probe points while traced)."""

    def __init__(self) -> None:
        super().__init__()
        self.open = False

    def reconcile_gate(self) -> Callable[[], bool]:
        return lambda: self.open


class Returns:
    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        return Result()


async def test_no_lifecycle_event_is_made_while_its_only_observer_gates_it(
    client: Client,
) -> None:
    gated = Gated()
    controller = configmap_controller(Returns(), client, gated)
    controller.start()
    controller.enqueue(Request("ns", "a"))
    await asyncio.sleep(0.1)
    assert gated.events == []
    gated.open = True
    controller.enqueue(Request("ns", "b"))
    await asyncio.sleep(0.1)
    assert [(e.step, e.context.request.name) for e in gated.events] == [
        (Step.STARTED, "b"),
        (Step.FINISHED, "b"),
    ]
    await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)


def test_a_fanouts_gate_is_open_while_any_observer_of_reconciles_would_act() -> None:
    class Deaf(RuntimeObserver):
        pass  # hears no reconcile: its default gate does not count

    first, second = Gated(), Gated()
    gate = ObserverFanout([first, second, Deaf()]).reconcile_gate()
    assert gate is not None and not gate()
    second.open = True
    assert gate()
    # An observer of reconciles without a gate always acts: no gate at all.
    assert ObserverFanout([first, RecordingObserver()]).reconcile_gate() is None


async def test_a_gated_observer_hears_reconciles_only_while_open_beside_others(
    client: Client,
) -> None:
    # Another observer has every event built: the gated one is still called only
    # while its gate is open (the node agent's probe points beside tracing).
    gated, always = Gated(), RecordingObserver()
    controller = configmap_controller(Returns(), client, gated, always)
    controller.start()
    controller.enqueue(Request("ns", "a"))
    await asyncio.sleep(0.1)
    gated.open = True
    controller.enqueue(Request("ns", "b"))
    await asyncio.sleep(0.1)
    await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)
    assert [(e.step, e.context.request.name) for e in gated.events] == [
        (Step.STARTED, "b"),
        (Step.FINISHED, "b"),
    ]
    assert [(e.step, e.context.request.name) for e in always.events] == [
        (Step.STARTED, "a"),
        (Step.FINISHED, "a"),
        (Step.STARTED, "b"),
        (Step.FINISHED, "b"),
    ]


class NotesItsTask:
    """Notes, per key, the task that ran it, its name then and the current reconcile."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[asyncio.Task[object] | None, str, bool]] = {}

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        task = asyncio.current_task()
        name = task.get_name() if task is not None else ""
        self.seen[request.name] = (task, name, current_reconcile() is ctx)
        return Result()


async def test_waiting_keys_are_reconciled_by_the_task_that_ended_the_last_one(
    client: Client,
) -> None:
    """A worker goes on with the keys that wait: twenty keys, two places, no task per
    key; each reconcile is the current one of its task and names it."""
    reconciler = NotesItsTask()
    controller = _running(reconciler, RecordingObserver(), client, max_concurrent_reconciles=2)
    controller.start()
    for index in range(20):
        controller.enqueue(Request("ns", f"k{index}"))
    await asyncio.sleep(0.1)
    assert sorted(reconciler.seen) == sorted(f"k{index}" for index in range(20))
    assert len({task for task, _, _ in reconciler.seen.values()}) <= 2
    assert all(
        name == f"reconcile c ns/{key}" and current
        for key, (_, name, current) in reconciler.seen.items()
    )
    assert controller.active_workers == 0
    await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)


_SET_BY_A: contextvars.ContextVar[str] = contextvars.ContextVar("set_by_a", default="unset")


class SetsAVariable:
    def __init__(self) -> None:
        self.found: dict[str, str] = {}

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        self.found[request.name] = _SET_BY_A.get()
        if request.name == "a":
            _SET_BY_A.set("a")
        return Result()


async def test_contextvars_a_reconcile_sets_do_not_reach_the_next(client: Client) -> None:
    reconciler = SetsAVariable()
    controller = _running(reconciler, RecordingObserver(), client, max_concurrent_reconciles=1)
    controller.start()
    for name in ("a", "b", "c"):
        controller.enqueue(Request("ns", name))
    await asyncio.sleep(0.1)
    assert reconciler.found == {"a": "unset", "b": "unset", "c": "unset"}
    await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)


_PREPARED: contextvars.ContextVar[str] = contextvars.ContextVar("prepared", default="unset")


class PreparesAVariable(RecordingObserver):
    """Sets a contextvar for key "a"'s reconcile at STARTED, takes it back at FINISHED
    (as tracing makes its span current)."""

    def __init__(self) -> None:
        super().__init__()
        self._token: contextvars.Token[str] | None = None

    def reconcile(self, event: LifecycleEvent) -> None:
        super().reconcile(event)
        if event.context.request.name != "a":
            return
        if event.step is Step.STARTED:
            self._token = _PREPARED.set("prepared")
        elif event.step is Step.FINISHED and self._token is not None:
            _PREPARED.reset(self._token)


class ReadsThePrepared:
    def __init__(self) -> None:
        self.found: dict[str, str] = {}

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        self.found[request.name] = _PREPARED.get()
        return Result()


async def test_contextvars_observers_prepare_reach_their_reconcile_only(client: Client) -> None:
    reconciler = ReadsThePrepared()
    controller = configmap_controller(reconciler, client, PreparesAVariable(), workers=1)
    controller.start()
    for name in ("b", "a", "c"):
        controller.enqueue(Request("ns", name))
    await asyncio.sleep(0.1)
    assert reconciler.found == {"b": "unset", "a": "prepared", "c": "unset"}
    await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)


class PreparesEachKey(RecordingObserver):
    """Sets a contextvar to the key's name for every reconcile at STARTED, takes it
    back at FINISHED."""

    def __init__(self) -> None:
        super().__init__()
        self._tokens: dict[str, contextvars.Token[str]] = {}

    def reconcile(self, event: LifecycleEvent) -> None:
        super().reconcile(event)
        name = event.context.request.name
        if event.step is Step.STARTED:
            self._tokens[name] = _PREPARED.set(name)
        elif event.step is Step.FINISHED:
            _PREPARED.reset(self._tokens.pop(name))


class ReadsThePreparedAndItsTask:
    def __init__(self) -> None:
        self.found: dict[str, tuple[str, asyncio.Task[object] | None]] = {}

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        self.found[request.name] = (_PREPARED.get(), asyncio.current_task())
        return Result()


async def test_contextvars_observers_prepare_are_taken_back_and_the_worker_goes_on(
    client: Client,
) -> None:
    reconciler = ReadsThePreparedAndItsTask()
    controller = configmap_controller(reconciler, client, PreparesEachKey(), workers=1)
    controller.start()
    for name in ("a", "b", "c"):
        controller.enqueue(Request("ns", name))
    await asyncio.sleep(0.1)
    assert {name: value for name, (value, _) in reconciler.found.items()} == {
        "a": "a",
        "b": "b",
        "c": "c",
    }
    # Each reconcile saw its own, and one worker task ran the three.
    assert len({task for _, task in reconciler.found.values()}) == 1
    await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)


class SlowThenQuick:
    """Key "slow" waits until it is cancelled; every other key returns at once."""

    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Task[object] | None] = {}

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        self.tasks[request.name] = asyncio.current_task()
        if request.name == "slow":
            await asyncio.sleep(3600)
        return Result()


async def test_a_cancelled_reconcile_ends_its_worker_and_the_next_key_is_not_cancelled(
    client: Client,
) -> None:
    recorder, reconciler = RecordingObserver(), SlowThenQuick()
    controller = _running(reconciler, recorder, client, max_concurrent_reconciles=1)
    controller.start()
    controller.enqueue(Request("ns", "slow"))
    controller.enqueue(Request("ns", "next"))
    await asyncio.sleep(2.5)  # the slow one's deadline (2 s) passed
    outcomes = {e.context.request.name: (e.outcome, e.reason) for e in recorder.finished()}
    assert outcomes == {
        "slow": (Outcome.CANCELLED, CancelReason.DEADLINE_EXCEEDED),
        "next": (Outcome.SUCCESS, None),
    }
    slow, after = reconciler.tasks["slow"], reconciler.tasks["next"]
    assert slow is not None and slow.done() and after is not slow
    await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)


async def test_a_worker_lets_the_loop_run_between_reconciles_once_its_turn_is_used(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys that wait are served back to back in one step of the loop until the
    worker has used its turn (`_TURN`), then other callbacks run."""
    order: list[str] = []

    class Notes:
        async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
            order.append(request.name)
            if request.name == "a":
                asyncio.get_running_loop().call_soon(order.append, "other")
            return Result()

    async def run_three() -> list[str]:
        order.clear()
        controller = _running(Notes(), RecordingObserver(), client, max_concurrent_reconciles=1)
        controller.start()
        for name in ("a", "b", "c"):
            controller.enqueue(Request("ns", name))
        await asyncio.sleep(0.1)
        await controller.stop(reason=CancelReason.SHUTDOWN, grace=1.0)
        return list(order)

    # The virtual clock stands still within a step: the turn is never used up.
    assert await run_three() == ["a", "b", "c", "other"]
    monkeypatch.setattr(running_module, "_TURN", 0.0)
    assert await run_three() == ["a", "other", "b", "c"]
