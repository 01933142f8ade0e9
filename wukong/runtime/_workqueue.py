"""An asyncio work queue with client-go's workqueue semantics.

A controller's watches add keys; its workers `get` a key, reconcile it and call
`done`. The queue guarantees:

- Dedup. A key that is already waiting is not added twice: ten events for one
  object before a worker gets to it make one reconcile, which reads the latest
  state anyway. Order is FIFO by first add.
- Exclusivity. A key being processed is never handed to another worker. If it
  is added meanwhile (its object changed under the reconcile), it is marked
  dirty and queued again on `done`, so the change is not lost and the two
  reconciles never overlap.
- Delayed adds. `add_after(key, delay)` schedules the key on the queue's
  `Timers` (one alarm for all its delayed keys, no polling); scheduling a key
  that is already scheduled keeps the *earlier* due time, as client-go's
  delaying queue does. `add_rate_limited` takes the delay from the
  `RateLimiter`.
- Fairness between tenants. With `tenant_of` (a controller passes the key's
  namespace), waiting keys are kept in one FIFO lane per tenant and `get`
  serves the lanes round-robin: a namespace with a thousand keys waiting gets
  one turn, then every other namespace with work gets one, so a quiet
  namespace's key waits behind at most one key of each busy namespace, not
  behind the whole backlog. `max_per_tenant` caps the keys of one tenant being
  processed at once while other tenants have keys waiting: a saturated tenant's
  keys wait (and keep their turn) while other tenants' keys are handed out. The
  cap never idles a worker: when only saturated tenants have keys waiting, the
  next in line is served anyway (a single-namespace install uses every worker).
  Within a lane the order is FIFO by first
  add, and dedup, exclusivity, delays and rate limits are unchanged: a delayed
  or rate-limited key enters its lane when it comes due. Without `tenant_of`
  there is one lane: plain FIFO, as in client-go.
- Taking without waiting. `get` waits for a key; `try_get` takes one only if
  it can right now. With `on_ready`, the queue calls it (synchronously, from
  the add or `done` that made a key available) so that a dispatcher can
  `try_get` at once: the key's reconcile starts without first waking a worker
  task, one turn of the event loop sooner. A take (`try_get`, `get`) first
  queues the delayed keys that are due, whose alarm the loop has not run yet
  (it is busy with whoever takes keys).
- Shutdown. `shut_down` wakes every waiting `get` with `QueueShutDown`, cancels
  the timers of delayed keys and ignores later adds. Keys already queued are
  still handed out; `get` raises once the queue is empty (client-go's Get
  returning `shutdown=true`).

Each key handed out comes in a `Ticket` with its history:

- `added_at`: when the key entered the queue (for queue-duration metrics; like
  client-go, a key re-added while processing counts from that add, so its wait
  includes the rest of the reconcile it was blocked behind).
- `due_at`: for a key that came from `add_after`, when it was *due*. The gap
  between due and actual start is the requeue's lateness. A `RequeueAfter` is a
  promise to look again at a given time; when workers are all busy (and each
  reconcile may run up to its timeout), that promise slips by up to a whole
  reconcile timeout per busy worker ahead of it. Recording `due_at` makes the
  slip measurable rather than invisible. A delayed add that comes due while
  the key is already waiting (or being processed) lends it its `due_at`: the
  reconcile that follows serves the requeue too.
- `triggers`: why the key was queued, one opaque value per add from whoever
  asked for it (the controller passes a `Trigger`: a watch event and how it
  mapped to the key, a requeue with a link to the reconcile that asked for
  it, ...), oldest first. Adds merged by dedup (while the key waits, while it
  is processed, or while it is scheduled) are all kept, up to `MAX_TRIGGERS`;
  `trigger_count` counts every add, kept or not (an add without a trigger
  counts too). The first add's tuple is the only allocation: merging is the
  rare path.

Times are the event loop's clock (`loop.time()`), the one its timers run on,
so delays, due times and durations can never disagree (and a loop with a
virtual clock drives the whole queue in tests). The queue is not thread-safe:
all calls come from one event loop, which must be running.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import NamedTuple

from wukong.runtime._alarm import loop_clock
from wukong.runtime._fanout import NO_OBSERVER, listener
from wukong.runtime._observer import RuntimeObserver
from wukong.runtime._ratelimit import RateLimiter, default_controller_rate_limiter
from wukong.runtime._timers import Timers

log = logging.getLogger("wukong.runtime.workqueue")

#: Triggers a queued key keeps at most; `Ticket.trigger_count` counts the rest too.
MAX_TRIGGERS = 8


class QueueShutDown(Exception):
    """`get` on a queue that is shut down and has nothing left to hand out."""


class Ticket(NamedTuple):
    """A key handed to a worker, with when and why it was queued (one per reconcile:
    a tuple, as frozen dataclasses build themselves slowly)."""

    key: Hashable
    added_at: float  # loop time: entered the queue (while not already queued)
    due_at: float | None  # loop time: when an add_after was due; None for plain adds
    triggers: tuple[object, ...]  # opaque, one per add, oldest first, at most MAX_TRIGGERS
    trigger_count: int  # adds this ticket serves, kept in `triggers` or not


def _one(trigger: object | None) -> tuple[object, ...]:
    return () if trigger is None else (trigger,)


def _merged(kept: tuple[object, ...], more: tuple[object, ...]) -> tuple[object, ...]:
    if not more or len(kept) >= MAX_TRIGGERS:
        return kept
    return (kept + more)[:MAX_TRIGGERS]


@dataclass(slots=True)
class _Entry:
    """Metadata of a dirty key, merged across deduplicated adds."""

    added_at: float
    due_at: float | None
    triggers: tuple[object, ...]
    trigger_count: int

    def merge(self, *, due_at: float | None, triggers: tuple[object, ...], count: int) -> None:
        if due_at is not None and (self.due_at is None or due_at < self.due_at):
            self.due_at = due_at
        self.triggers = _merged(self.triggers, triggers)
        self.trigger_count += count


@dataclass(slots=True)
class _Scheduled:
    due_at: float
    triggers: tuple[object, ...]
    trigger_count: int
    token: int  # its timer in the queue's Timers


class WorkQueue:
    """Deduplicating, exclusive, delaying, rate-limited queue of hashable keys."""

    def __init__(
        self,
        *,
        name: str,
        rate_limiter: RateLimiter | None = None,
        observer: RuntimeObserver = NO_OBSERVER,
        tenant_of: Callable[[Hashable], Hashable] | None = None,
        max_per_tenant: int | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        if max_per_tenant is not None and max_per_tenant < 1:
            raise ValueError("max_per_tenant must be at least 1")
        if max_per_tenant is not None and tenant_of is None:
            raise ValueError("max_per_tenant needs tenant_of")
        self.name = name
        self.rate_limiter = (
            rate_limiter if rate_limiter is not None else default_controller_rate_limiter()
        )
        # Resolved once: a report nobody listens to is not made at all.
        self._on_added = listener(observer, "queue_added")
        self._on_got = listener(observer, "queue_got")
        self._on_done = listener(observer, "queue_done")
        self._on_retried = listener(observer, "queue_retried")
        # What metrics need of every key, recorded here (client-go's MetricsProvider).
        self._metrics = observer.queue_metrics(name)
        self._observer = observer
        self._tenant_of = tenant_of
        self._max_per_tenant = max_per_tenant
        # Keys ready to hand out: one FIFO lane per tenant, and the tenants with
        # a non-empty lane in the order they are served. Invariant: every key in
        # a lane is in _dirty and not in _processing; a lane is never empty.
        self._lanes: dict[Hashable, deque[Hashable]] = {}
        self._turns: deque[Hashable] = deque()
        self._ready = 0  # keys in all lanes
        # Keys being processed per tenant (only with max_per_tenant).
        self._busy: dict[Hashable, int] = {}
        # Keys that need processing: those in a lane, plus those re-added while
        # being processed (queued again by `done`).
        self._dirty: dict[Hashable, _Entry] = {}
        # Keys handed out and not yet done -> loop time they were handed out.
        self._processing: dict[Hashable, float] = {}
        self._scheduled: dict[Hashable, _Scheduled] = {}
        self._timers: Timers[Hashable] = Timers(self._fire)
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._on_ready = on_ready
        self._shutting_down = False
        # The loop's clock, found on first use (a queue may be made before its loop
        # runs), then called directly: read three times per key handed out.
        self._now: Callable[[], float] = self._first_now

    def _metrics_failed(self) -> None:
        """A series of `_metrics` raised: logged, counted, and none recorded into again
        (a broken series must not break the queue, nor fill the log)."""
        log.exception("queue %s: its metrics failed; it records none from now on", self.name)
        self._metrics = None
        self._observer.observer_failed("queue metrics", "queue_metrics")

    # -- adding --------------------------------------------------------------------

    def add(self, key: Hashable, *, trigger: object | None = None) -> None:
        """Queue `key` unless it is already waiting; if it is being processed, after `done`.

        `trigger` (why) travels with the key to the ticket, merged with those of
        other adds of it."""
        self._add(key, due_at=None, triggers=_one(trigger), count=1)

    def add_after(self, key: Hashable, delay: float, *, trigger: object | None = None) -> None:
        """Queue `key` after `delay` seconds; an earlier schedule of the same key wins
        (and keeps this add's trigger)."""
        if self._shutting_down:
            return
        if delay <= 0:
            self._add(key, due_at=None, triggers=_one(trigger), count=1)
            return
        due_at = self._now() + delay
        triggers = _one(trigger)
        count = 1
        scheduled = self._scheduled.get(key)
        if scheduled is not None:
            if scheduled.due_at <= due_at:
                scheduled.triggers = _merged(scheduled.triggers, triggers)
                scheduled.trigger_count += 1
                return
            self._timers.cancel(scheduled.token)
            triggers = _merged(scheduled.triggers, triggers)
            count += scheduled.trigger_count
        token = self._timers.schedule(due_at, key)
        self._scheduled[key] = _Scheduled(
            due_at=due_at, triggers=triggers, trigger_count=count, token=token
        )

    def add_rate_limited(
        self, key: Hashable, *, trigger: object | None = None, max_delay: float | None = None
    ) -> float:
        """Queue `key` after the rate limiter's delay (a retry), at most `max_delay`.

        Returns the delay chosen (0 once shut down: nothing is queued).
        """
        if self._shutting_down:
            return 0.0
        if self._on_retried is not None:
            self._on_retried(self.name)
        delay = self.rate_limiter.when(key)
        if max_delay is not None:
            delay = min(delay, max_delay)
        self.add_after(key, delay, trigger=trigger)
        return delay

    def forget(self, key: Hashable) -> None:
        """Clear `key`'s backoff history (it succeeded)."""
        self.rate_limiter.forget(key)

    def num_requeues(self, key: Hashable) -> int:
        return self.rate_limiter.num_requeues(key)

    def _fire(self, key: Hashable) -> None:
        scheduled = self._scheduled.pop(key, None)
        if scheduled is not None:
            self._add(
                key,
                due_at=scheduled.due_at,
                triggers=scheduled.triggers,
                count=scheduled.trigger_count,
            )

    def _add(
        self, key: Hashable, *, due_at: float | None, triggers: tuple[object, ...], count: int
    ) -> None:
        if self._shutting_down:
            return
        entry = self._dirty.get(key)
        if entry is not None:
            # Already waiting, or re-added during processing: one reconcile covers both.
            entry.merge(due_at=due_at, triggers=triggers, count=count)
            return
        self._dirty[key] = _Entry(
            added_at=self._now(), due_at=due_at, triggers=triggers, trigger_count=count
        )
        if self._metrics is not None:
            try:
                self._metrics.adds.value += 1.0
            except Exception:
                self._metrics_failed()
        if self._on_added is not None:
            self._on_added(self.name)
        if key in self._processing:
            return  # `done` queues it, so that two workers never hold the same key
        self._enqueue(key)

    def _tenant(self, key: Hashable) -> Hashable:
        return None if self._tenant_of is None else self._tenant_of(key)

    def _enqueue(self, key: Hashable) -> None:
        tenant = None if self._tenant_of is None else self._tenant_of(key)
        lane = self._lanes.get(tenant)
        if lane is None:
            lane = self._lanes[tenant] = deque()
            self._turns.append(tenant)  # a tenant with new work waits for its turn
        lane.append(key)
        self._ready += 1
        self._wake_one()

    def _take(self) -> Hashable | None:
        """The next key by round-robin over tenants under their cap; when only saturated
        tenants have keys waiting, the first of them (a cap never idles a worker).
        None if no key waits."""
        if not self._turns:
            return None
        index = 0
        cap = self._max_per_tenant
        if cap is not None:
            # A saturated tenant keeps its place in line while another may go first.
            for position, candidate in enumerate(self._turns):
                if self._busy.get(candidate, 0) < cap:
                    index = position
                    break
        tenant = self._turns[index]
        lane = self._lanes[tenant]
        key = lane.popleft()
        del self._turns[index]
        if lane:
            self._turns.append(tenant)  # served: to the back of the line
        else:
            del self._lanes[tenant]
        self._ready -= 1
        if cap is not None:
            self._busy[tenant] = self._busy.get(tenant, 0) + 1
        return key

    # -- taking --------------------------------------------------------------------

    def try_get(self) -> Ticket | None:
        """Take a key and mark it processing, without waiting; None if none can be taken now.

        Delayed keys that are due come into the queue first (their alarm may not
        have run yet: the loop is busy with whoever takes keys)."""
        now = self._now()
        self._timers.fire_due(now)
        key = self._take()
        if key is None:
            return None
        entry = self._dirty.pop(key)
        self._processing[key] = now
        metrics = self._metrics
        if metrics is not None:
            try:
                metrics.waited.observe(now - entry.added_at)
            except Exception:
                self._metrics_failed()
        if self._on_got is not None:
            self._on_got(self.name, now - entry.added_at)
        return Ticket(key, entry.added_at, entry.due_at, entry.triggers, entry.trigger_count)

    async def get(self) -> Ticket:
        """Wait for a key and mark it processing. `QueueShutDown` once shut down and empty."""
        while (ticket := self.try_get()) is None:
            if self._shutting_down:
                raise QueueShutDown(self.name)
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # Woken for a key and cancelled before taking it: pass the
                # wake-up on, or that key would sit there with workers waiting.
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()
                raise
            finally:
                # A wake-up already took it off the list (and deque.remove of a
                # missing item would format the future's repr for its error).
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            # Woken, but a getter that did not have to wait may have taken the
            # key first: look again.
        return ticket

    def done(self, key: Hashable) -> None:
        """End processing of `key`; queue it again if it was added meanwhile."""
        started = self._processing.pop(key, None)
        if started is None:
            return
        metrics = self._metrics
        if metrics is not None or self._on_done is not None:
            worked = self._now() - started
            if metrics is not None:
                try:
                    metrics.worked.observe(worked)
                except Exception:
                    self._metrics_failed()
            if self._on_done is not None:
                self._on_done(self.name, worked)
        if self._max_per_tenant is not None:
            tenant = self._tenant(key)
            busy = self._busy[tenant] - 1
            if busy:
                self._busy[tenant] = busy
            else:
                del self._busy[tenant]
        if key in self._dirty:
            self._enqueue(key)

    def _wake_one(self) -> None:
        if self._on_ready is not None:
            self._on_ready()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    # -- shutdown ------------------------------------------------------------------

    def shut_down(self) -> None:
        """Wake all waiters (they get `QueueShutDown`), drop delayed keys, ignore later adds."""
        self._shutting_down = True
        self._timers.close()
        self._scheduled.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    # -- state (for metrics) -------------------------------------------------------

    def __len__(self) -> int:
        """Keys waiting to be handed out (workqueue_depth)."""
        return self._ready

    def depth_by_tenant(self) -> dict[Hashable, int]:
        """Keys waiting to be handed out, per tenant (one entry: None, without tenants)."""
        return {tenant: len(lane) for tenant, lane in self._lanes.items()}

    @property
    def scheduled(self) -> int:
        """Keys waiting for their `add_after` delay."""
        return len(self._scheduled)

    def processing_seconds(self) -> list[float]:
        """How long each key being processed has been processed so far."""
        now = self._now()
        return [now - started for started in self._processing.values()]

    def _first_now(self) -> float:
        self._now = loop_clock(asyncio.get_running_loop())
        return self._now()
