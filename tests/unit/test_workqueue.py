"""The work queue: dedup, exclusivity, FIFO, delayed and rate-limited adds, shutdown.

Every test runs on a virtual clock (looptime): the loop's time only moves when
nothing is ready to run, jumping straight to the next timer. So `advance(s)`
costs no real time, and times are exact, never "about" or "at least".
"""

import asyncio
import random
from collections.abc import Hashable

import pytest

from wukong.runtime import RuntimeObserver
from wukong.runtime._fanout import ObserverFanout, listener
from wukong.runtime._ratelimit import ItemExponentialFailureRateLimiter
from wukong.runtime._workqueue import QueueShutDown, Ticket, WorkQueue

pytestmark = pytest.mark.looptime

# Virtual seconds: only guards against hangs.
GET_TIMEOUT = 2.0


def now() -> float:
    return asyncio.get_running_loop().time()


async def advance(seconds: float) -> None:
    """Let `seconds` of (virtual) time pass, running whatever falls due."""
    await asyncio.sleep(seconds)


async def get(queue: WorkQueue) -> Ticket:
    async with asyncio.timeout(GET_TIMEOUT):
        return await queue.get()


async def assert_blocks(queue: WorkQueue) -> None:
    """`get` finds nothing to take right now."""
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.02):
            await queue.get()


class QueueObserver(RuntimeObserver):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float | None]] = []

    def queue_added(self, queue: str) -> None:
        self.calls.append(("add", queue, None))

    def queue_got(self, queue: str, waited: float) -> None:
        self.calls.append(("get", queue, waited))

    def queue_done(self, queue: str, worked: float) -> None:
        self.calls.append(("done", queue, worked))

    def queue_retried(self, queue: str) -> None:
        self.calls.append(("retry", queue, None))

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.calls]


async def test_fifo_order() -> None:
    queue = WorkQueue(name="q")
    for key in ("c", "a", "b"):
        queue.add(key)
    assert [(await get(queue)).key for _ in range(3)] == ["c", "a", "b"]


async def test_pending_keys_are_deduplicated() -> None:
    queue = WorkQueue(name="q")
    queue.add("a")
    queue.add("b")
    queue.add("a")
    assert len(queue) == 2
    assert (await get(queue)).key == "a"
    assert (await get(queue)).key == "b"
    assert len(queue) == 0
    await assert_blocks(queue)


async def test_key_readded_while_processing_comes_back_only_after_done() -> None:
    queue = WorkQueue(name="q")
    queue.add("a")
    ticket = await get(queue)
    queue.add("a")
    queue.add("a")
    assert len(queue) == 0  # not waiting: it is held by a worker
    await assert_blocks(queue)

    waiting = asyncio.create_task(get(queue))
    await advance(0.01)
    assert not waiting.done()
    queue.done(ticket.key)
    again = await waiting
    assert again.key == "a"
    queue.done("a")
    # The two re-adds were merged into one.
    assert len(queue) == 0


async def test_done_without_readd_does_not_requeue() -> None:
    queue = WorkQueue(name="q")
    queue.add("a")
    await get(queue)
    queue.done("a")
    queue.done("a")  # a second done is harmless
    queue.done("unknown")
    assert len(queue) == 0


async def test_try_get_takes_only_what_can_be_taken_now() -> None:
    queue = WorkQueue(name="q")
    assert queue.try_get() is None
    queue.add("a")
    ticket = queue.try_get()
    assert ticket is not None and ticket.key == "a"
    queue.add("a")
    assert queue.try_get() is None  # held: re-added, but not handed out twice
    queue.done("a")
    again = queue.try_get()
    assert again is not None and again.key == "a"


async def test_on_ready_lets_a_dispatcher_take_each_key_as_it_becomes_ready() -> None:
    taken: list[Hashable] = []
    queue: WorkQueue

    def dispatch() -> None:
        while (ticket := queue.try_get()) is not None:
            taken.append(ticket.key)

    queue = WorkQueue(name="q", on_ready=dispatch)
    queue.add("a")
    assert taken == ["a"]  # synchronously, from the add
    queue.add("a")  # re-added while held: ready only once done
    assert taken == ["a"]
    queue.done("a")
    assert taken == ["a", "a"]
    queue.add_after("b", 1.0)
    await advance(0.5)
    assert taken == ["a", "a"]
    await advance(0.5)
    assert taken == ["a", "a", "b"]  # from the timer that made it due


async def test_concurrent_workers_never_share_a_key() -> None:
    queue = WorkQueue(name="q")
    keys = ["a", "b", "c"]
    active: set[Hashable] = set()
    overlaps: list[Hashable] = []
    processed: list[Hashable] = []
    rng = random.Random(4)

    async def worker() -> None:
        while True:
            try:
                ticket = await queue.get()
            except QueueShutDown:
                return
            if ticket.key in active:
                overlaps.append(ticket.key)
            active.add(ticket.key)
            try:
                # Yield a few times so other workers and the producer run mid-"reconcile".
                for _ in range(rng.randint(0, 3)):
                    await asyncio.sleep(0)
                processed.append(ticket.key)
            finally:
                active.discard(ticket.key)
                queue.done(ticket.key)

    workers = [asyncio.create_task(worker()) for _ in range(8)]
    for _ in range(500):
        queue.add(rng.choice(keys))
        if rng.random() < 0.5:
            await asyncio.sleep(0)
    # After shut_down the workers still drain what is queued, including keys
    # re-added while processing (`done` queues them), then get QueueShutDown.
    queue.shut_down()
    async with asyncio.timeout(GET_TIMEOUT):
        await asyncio.gather(*workers)
    assert len(queue) == 0
    assert queue.processing_seconds() == []

    assert overlaps == []
    assert set(processed) == set(keys)
    # Dedup merged many of the 500 adds.
    assert len(processed) < 500


async def test_processing_seconds_tracks_keys_in_flight() -> None:
    queue = WorkQueue(name="q")
    queue.add("a")
    queue.add("b")
    await get(queue)
    await advance(2.0)
    await get(queue)
    await advance(0.5)
    assert sorted(queue.processing_seconds()) == pytest.approx([0.5, 2.5])
    queue.done("a")
    queue.done("b")
    assert queue.processing_seconds() == []


async def test_add_after_delivers_after_the_delay_and_records_due_at() -> None:
    queue = WorkQueue(name="q")
    start = now()
    queue.add_after("a", 3.0)
    assert len(queue) == 0
    assert queue.scheduled == 1
    await advance(2.9)
    assert len(queue) == 0  # not handed out early

    ticket = await get(queue)
    assert ticket.key == "a"
    assert ticket.due_at == pytest.approx(start + 3.0)
    assert now() == pytest.approx(start + 3.0)  # and not late
    assert ticket.added_at == pytest.approx(ticket.due_at)  # entered the queue when due
    assert queue.scheduled == 0


async def test_try_get_takes_a_delayed_key_that_is_due_before_its_alarm_runs() -> None:
    """A worker looking for its next key while the loop is busy with it finds the
    delayed keys that came due meanwhile; those not due yet stay scheduled."""
    queue = WorkQueue(name="q")
    start = now()
    taken: list[Ticket | None] = []
    # Due with the key, and ahead of the queue's alarm in the loop's line.
    asyncio.get_running_loop().call_at(start + 1.0, lambda: taken.append(queue.try_get()))
    queue.add_after("a", 1.0)
    queue.add_after("b", 2.0)
    await advance(1.0)
    assert len(taken) == 1 and taken[0] is not None
    assert taken[0].key == "a" and taken[0].due_at == pytest.approx(start + 1.0)
    assert queue.scheduled == 1 and len(queue) == 0
    queue.done("a")
    ticket = await get(queue)  # the alarm, set for "a", still brings "b" at its time
    assert ticket.key == "b" and now() == pytest.approx(start + 2.0)


async def test_add_after_keeps_the_earlier_due_time() -> None:
    queue = WorkQueue(name="q")
    start = now()
    queue.add_after("a", 0.02)
    queue.add_after("a", 5.0)  # later: ignored
    queue.add_after("b", 5.0)
    queue.add_after("b", 0.03)  # earlier: replaces
    assert queue.scheduled == 2

    first, second = await get(queue), await get(queue)
    assert (first.key, second.key) == ("a", "b")
    assert first.due_at == pytest.approx(start + 0.02)
    assert second.due_at == pytest.approx(start + 0.03)
    assert now() == pytest.approx(start + 0.03)  # the 5 s schedules held nothing up
    assert queue.scheduled == 0
    await advance(10.0)
    assert len(queue) == 0  # and the replaced 5 s timer never fires


async def test_add_after_without_delay_adds_now() -> None:
    queue = WorkQueue(name="q")
    queue.add_after("a", 0)
    queue.add_after("b", -1)
    assert len(queue) == 2
    assert queue.scheduled == 0
    ticket = await get(queue)
    assert ticket.due_at is None


async def test_delayed_key_due_while_processing_is_queued_after_done() -> None:
    queue = WorkQueue(name="q")
    queue.add("a")
    ticket = await get(queue)
    queue.add_after("a", 0.01, trigger="requeue")
    await advance(0.05)  # due now, but "a" is still held
    assert queue.scheduled == 0
    await assert_blocks(queue)
    queue.done(ticket.key)
    again = await get(queue)
    assert again.key == "a"
    assert again.due_at is not None
    assert again.triggers == ("requeue",)


async def test_triggers_are_carried_and_merged_in_order() -> None:
    queue = WorkQueue(name="q")
    queue.add("a")
    queue.add("a", trigger="first")
    queue.add("a", trigger="second")
    ticket = await get(queue)
    assert (ticket.triggers, ticket.trigger_count) == (("first", "second"), 3)

    queue.add_after("b", 0.01, trigger="delayed")
    ticket = await get(queue)
    assert (ticket.key, ticket.triggers, ticket.trigger_count) == ("b", ("delayed",), 1)

    # Rescheduling earlier keeps the trigger already given.
    queue.add_after("c", 5.0, trigger="kept")
    queue.add_after("c", 0.01)
    ticket = await get(queue)
    assert (ticket.key, ticket.triggers, ticket.trigger_count) == ("c", ("kept",), 2)


async def test_add_rate_limited_uses_the_limiter() -> None:
    recorder = QueueObserver()
    limiter = ItemExponentialFailureRateLimiter(base_delay=0.01, max_delay=1.0)
    queue = WorkQueue(name="q", rate_limiter=limiter, observer=recorder)
    start = now()
    queue.add_rate_limited("a", trigger="retry")
    assert queue.num_requeues("a") == 1
    assert queue.scheduled == 1
    ticket = await get(queue)
    assert ticket.triggers == ("retry",)
    assert ticket.due_at == pytest.approx(start + 0.01)
    queue.done("a")

    queue.add_rate_limited("a")
    assert queue.num_requeues("a") == 2
    queue.forget("a")
    assert queue.num_requeues("a") == 0
    assert recorder.kinds().count("retry") == 2


async def test_observer_sees_adds_gets_and_dones() -> None:
    recorder = QueueObserver()
    queue = WorkQueue(name="vm", observer=recorder)
    queue.add("a")
    queue.add("a")  # merged: not counted
    await advance(0.25)
    await get(queue)
    await advance(1.5)
    queue.done("a")
    assert recorder.kinds() == ["add", "get", "done"]
    assert {name for _, name, _ in recorder.calls} == {"vm"}
    waited = recorder.calls[1][2]
    worked = recorder.calls[2][2]
    assert waited == pytest.approx(0.25)
    assert worked == pytest.approx(1.5)


async def test_failing_observer_does_not_break_the_queue() -> None:
    class Broken(QueueObserver):
        def queue_added(self, queue: str) -> None:
            raise RuntimeError("metrics are down")

    # The manager always hands its parts the fan-out, which contains failures.
    recorder = QueueObserver()
    fanout = ObserverFanout([Broken(), recorder])
    queue = WorkQueue(name="q", observer=fanout)
    queue.add("a")
    assert (await get(queue)).key == "a"
    assert fanout.failures == 1
    assert recorder.kinds() == ["add", "get"]  # the healthy observer still saw everything


async def test_a_lone_failing_observer_is_contained_too() -> None:
    """Behind the fan-out, one observer of a report is called directly (`listener`),
    its failures still contained and counted."""

    class Broken(RuntimeObserver):
        def queue_added(self, queue: str) -> None:
            raise RuntimeError("metrics are down")

    fanout = ObserverFanout([Broken()])
    queue = WorkQueue(name="q", observer=fanout)
    queue.add("a")
    queue.add("b")
    assert (await get(queue)).key == "a"
    assert fanout.failures == 2


def test_a_report_nobody_overrides_resolves_to_nothing() -> None:
    class Counts(RuntimeObserver):
        def queue_got(self, queue: str, waited: float) -> None:
            pass

    counts = Counts()
    assert listener(ObserverFanout([counts]), "queue_added") is None
    assert listener(ObserverFanout([counts]), "queue_got") is not None
    assert listener(counts, "queue_added") is None
    assert listener(counts, "queue_got") == counts.queue_got
    assert listener(ObserverFanout([counts, Counts()]), "queue_got") is not None


async def test_shut_down_wakes_blocked_getters() -> None:
    queue = WorkQueue(name="q")
    getters = [asyncio.create_task(queue.get()) for _ in range(3)]
    await advance(0.01)
    assert not any(getter.done() for getter in getters)
    queue.shut_down()
    assert queue.shutting_down
    for getter in getters:
        with pytest.raises(QueueShutDown):
            async with asyncio.timeout(GET_TIMEOUT):
                await getter


async def test_shut_down_drops_delayed_keys_and_ignores_later_adds() -> None:
    queue = WorkQueue(name="q")
    queue.add("queued")
    queue.add_after("delayed", 0.01)
    queue.shut_down()
    assert queue.scheduled == 0
    queue.add("late")
    queue.add_after("late", 0.01)
    queue.add_rate_limited("late")
    assert queue.num_requeues("late") == 0
    await advance(0.03)

    # Keys queued before the shutdown are still handed out, then it is over.
    assert (await get(queue)).key == "queued"
    with pytest.raises(QueueShutDown):
        await get(queue)


async def test_cancelled_getter_passes_its_wakeup_on() -> None:
    queue = WorkQueue(name="q")
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)  # both are waiting, `first` at the head
    queue.add("a")  # wakes `first`...
    first.cancel()  # ...which is cancelled before it can take the key
    ticket = await asyncio.wait_for(second, GET_TIMEOUT)
    assert ticket.key == "a"
    assert first.cancelled()


# -- fairness between tenants ------------------------------------------------------------


def _namespace(key: Hashable) -> Hashable:
    assert isinstance(key, tuple)
    return key[0]


async def test_tenants_are_served_round_robin() -> None:
    queue = WorkQueue(name="q", tenant_of=_namespace)
    for index in range(5):
        queue.add(("noisy", f"n{index}"))
    queue.add(("quiet-1", "a"))
    queue.add(("quiet-2", "b"))
    queue.add(("quiet-1", "c"))
    order = []
    for _ in range(8):
        ticket = await get(queue)
        order.append(ticket.key)
        queue.done(ticket.key)
    # One turn each, in the order the tenants first had work; FIFO inside a tenant.
    assert order == [
        ("noisy", "n0"),
        ("quiet-1", "a"),
        ("quiet-2", "b"),
        ("noisy", "n1"),
        ("quiet-1", "c"),
        ("noisy", "n2"),
        ("noisy", "n3"),
        ("noisy", "n4"),
    ]
    assert len(queue) == 0


async def test_a_quiet_tenant_waits_behind_one_key_of_a_backlog_not_all_of_it() -> None:
    queue = WorkQueue(name="q", tenant_of=_namespace)
    for index in range(1000):
        queue.add(("noisy", f"n{index}"))
    first = await get(queue)
    queue.add(("quiet", "q"))
    # The quiet tenant joins the line behind the noisy one: one noisy key, then it.
    assert (await get(queue)).key == ("noisy", "n1")
    assert (await get(queue)).key == ("quiet", "q")
    queue.done(first.key)
    assert len(queue) == 998
    assert queue.depth_by_tenant() == {"noisy": 998}


async def test_without_tenants_the_queue_is_fifo_across_namespaces() -> None:
    queue = WorkQueue(name="q")
    keys = [("noisy", "n0"), ("noisy", "n1"), ("quiet", "q")]
    for key in keys:
        queue.add(key)
    assert [(await get(queue)).key for _ in keys] == keys


async def test_fairness_keeps_dedup_exclusivity_and_due_times() -> None:
    queue = WorkQueue(name="q", tenant_of=_namespace)
    queue.add(("a", "x"))
    queue.add(("a", "x"))
    assert len(queue) == 1
    ticket = await get(queue)
    queue.add(("a", "x"))  # changed while processing: waits for done
    queue.add_after(("b", "y"), 3.0)
    await assert_blocks(queue)
    await advance(3.0)
    delayed = await get(queue)
    assert delayed.key == ("b", "y")
    assert delayed.due_at == pytest.approx(3.0, abs=0.05)
    queue.done(ticket.key)
    assert (await get(queue)).key == ("a", "x")


async def test_a_saturated_tenant_waits_while_others_are_served() -> None:
    queue = WorkQueue(name="q", tenant_of=_namespace, max_per_tenant=2)
    for index in range(4):
        queue.add(("noisy", f"n{index}"))
    n0, n1 = await get(queue), await get(queue)
    assert {n0.key, n1.key} == {("noisy", "n0"), ("noisy", "n1")}
    queue.add(("quiet", "q"))
    # Two of noisy in flight: its third waits (keeping its turn) while quiet goes first.
    assert (await get(queue)).key == ("quiet", "q")
    assert len(queue) == 2


async def test_the_cap_never_leaves_a_worker_idle_when_one_tenant_has_work() -> None:
    queue = WorkQueue(name="q", tenant_of=_namespace, max_per_tenant=2)
    for index in range(4):
        queue.add(("only", f"k{index}"))
    # A single namespace with work gets every worker that asks, cap or not.
    tickets = [await get(queue) for _ in range(4)]
    assert [ticket.key for ticket in tickets] == [("only", f"k{index}") for index in range(4)]
    await assert_blocks(queue)  # nothing left, not a cap holding keys back

    # Over its cap, it yields to another tenant's key as soon as one waits...
    queue.add(("only", "k4"))
    queue.add(("other", "o"))
    assert (await get(queue)).key == ("other", "o")
    # ...and takes the next worker again once nobody else waits.
    assert (await get(queue)).key == ("only", "k4")


async def test_a_getter_waiting_on_an_empty_queue_takes_a_capped_tenants_next_key() -> None:
    queue = WorkQueue(name="q", tenant_of=_namespace, max_per_tenant=1)
    queue.add(("a", "1"))
    first = await get(queue)
    waiting = asyncio.create_task(get(queue))
    await advance(0.01)
    assert not waiting.done()
    queue.add(("a", "2"))  # its tenant is at the cap, but no other tenant has work
    assert (await waiting).key == ("a", "2")
    queue.done(first.key)


def test_max_per_tenant_needs_tenants_and_a_positive_limit() -> None:
    with pytest.raises(ValueError, match="tenant_of"):
        WorkQueue(name="q", max_per_tenant=1)
    with pytest.raises(ValueError, match="at least 1"):
        WorkQueue(name="q", tenant_of=_namespace, max_per_tenant=0)


async def test_fair_concurrent_workers_never_share_a_key_and_respect_the_cap() -> None:
    queue = WorkQueue(name="q", tenant_of=_namespace, max_per_tenant=2)
    rng = random.Random(7)
    held: set[Hashable] = set()
    per_tenant: dict[Hashable, int] = {}
    peak: dict[Hashable, int] = {}
    served = 0
    over_cap = 0

    async def worker() -> None:
        nonlocal served, over_cap
        while True:
            try:
                ticket = await queue.get()
            except QueueShutDown:
                return
            assert ticket.key not in held
            held.add(ticket.key)
            tenant = _namespace(ticket.key)
            if per_tenant.get(tenant, 0) >= 2:
                # Past its cap only while no tenant under the cap has a key waiting.
                over_cap += 1
                waiting = [t for t, depth in queue.depth_by_tenant().items() if depth]
                assert all(per_tenant.get(t, 0) >= 2 for t in waiting)
            per_tenant[tenant] = per_tenant.get(tenant, 0) + 1
            peak[tenant] = max(peak.get(tenant, 0), per_tenant[tenant])
            await asyncio.sleep(rng.random() / 10)
            held.discard(ticket.key)
            per_tenant[tenant] -= 1
            served += 1
            queue.done(ticket.key)

    workers = [asyncio.create_task(worker()) for _ in range(6)]
    for _ in range(300):
        queue.add((f"ns{rng.randrange(4)}", f"k{rng.randrange(20)}"))
        await asyncio.sleep(rng.random() / 100)
    while len(queue) or any(per_tenant.values()):
        await advance(0.1)
    queue.shut_down()
    await asyncio.gather(*workers)
    assert served > 0
    assert over_cap > 0  # the run did lend idle workers past the cap


class _Series:
    """A counter and a histogram series at once, keeping what it was given."""

    def __init__(self, broken: bool = False) -> None:
        self.value = 0.0
        self.observed: list[float] = []
        self.broken = broken

    def observe(self, amount: float) -> None:
        if self.broken:
            raise RuntimeError("series bug")
        self.observed.append(amount)


class _QueueSeries:
    def __init__(self, broken: bool = False) -> None:
        self.adds, self.waited, self.worked = _Series(), _Series(broken), _Series()


class _GivesSeries(RuntimeObserver):
    name = "gives series"

    def __init__(self, series: _QueueSeries) -> None:
        self.series = series
        self.asked: list[str] = []
        self.failures: list[tuple[str, str]] = []

    def queue_metrics(self, queue: str) -> _QueueSeries:
        self.asked.append(queue)
        return self.series

    def observer_failed(self, observer: str, method: str) -> None:
        self.failures.append((observer, method))


class _GivesNone(RuntimeObserver):
    def queue_metrics(self, queue: str) -> None:
        return None


async def test_the_queue_records_adds_waits_and_work_into_the_series_it_was_given() -> None:
    giver = _GivesSeries(_QueueSeries())
    queue = WorkQueue(name="q", observer=ObserverFanout([_GivesNone(), giver]))
    assert giver.asked == ["q"]  # asked once, as the queue is made (the first giver's used)
    queue.add("a")
    queue.add("a")  # merged: not an add
    queue.add("b")
    await advance(2.0)
    ticket = await get(queue)
    await advance(0.5)
    queue.done(ticket.key)
    series = giver.series
    assert series.adds.value == 2.0
    assert series.waited.observed == [2.0]
    assert series.worked.observed == [0.5]


async def test_a_series_that_raises_never_breaks_the_queue(
    caplog: pytest.LogCaptureFixture,
) -> None:
    giver = _GivesSeries(_QueueSeries(broken=True))
    queue = WorkQueue(name="q", observer=ObserverFanout([giver]))
    for key in ("a", "b"):
        queue.add(key)
    first = await get(queue)  # the wait's series raises here
    queue.done(first.key)
    second = await get(queue)
    queue.done(second.key)
    queue.add("c")
    assert [first.key, second.key] == ["a", "b"]
    # Logged and counted once; nothing recorded after the failure (not even the work
    # time of the key it failed on, nor later adds).
    assert giver.failures == [("queue metrics", "queue_metrics")]
    assert len([r for r in caplog.records if "its metrics failed" in r.message]) == 1
    assert giver.series.worked.observed == []
    assert giver.series.adds.value == 2.0
