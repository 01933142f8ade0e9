"""Many timers on one alarm.

A work queue schedules one timer for every delayed key: hundreds a second,
some replaced before they fire. As `loop.call_at` handles each costs a
handle, a push on the loop's heap (ordered by a comparison written in Python)
and, once cancelled, a pop or a clean-up of that heap later. `Timers` keeps its due times in a heap
of plain tuples (compared in C) and sets one `Alarm` (`_alarm.py`: exact on
Linux) for the earliest; client-go's delaying queue does the same with one
timer and a heap.
"""

import asyncio
import heapq
import math
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from wukong.runtime._alarm import Alarm, loop_clock

_Item = TypeVar("_Item")
_CANCELLED = object()
# Items due sooner than this after a firing are looked at again after one turn
# of the loop (which runs what just fired) instead of by the alarm.
_ONE_TURN = 0.001


class Timers(Generic[_Item]):
    """Calls `fire(item)` at each scheduled time unless cancelled first, in time order."""

    def __init__(self, fire: Callable[[_Item], None]) -> None:
        self._fire = fire
        self._heap: list[tuple[float, int]] = []  # (loop time, token), cancelled ones too
        self._items: dict[int, _Item] = {}  # token -> item, scheduled and not cancelled
        self._next_token = 0
        self._alarm = Alarm(self._run)
        # When `_run` runs next (the alarm rings or a check comes): the earliest
        # scheduled time or before it; infinity when nothing will.
        self._wake_at = math.inf
        self._check_pending = False
        # The loop the alarm was last set on, and its clock: `_run` and `_check`
        # come only after a set, and looking the running loop up costs a system
        # call (getpid) in Python 3.11, up to two per firing.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock: Callable[[], float] = time.monotonic

    def schedule(self, when: float, item: _Item) -> int:
        """Fire `item` at loop time `when`; the token cancels it."""
        token = self._next_token
        self._next_token += 1
        self._items[token] = item
        heapq.heappush(self._heap, (when, token))
        if when < self._wake_at:
            self._set_alarm(when)
        return token

    def cancel(self, token: int) -> None:
        """Never fire what `token` scheduled (nothing if it fired or was cancelled)."""
        if self._items.pop(token, _CANCELLED) is _CANCELLED:
            return
        self._drop_cancelled_head()
        # The alarm stays set: if nothing is due when it rings, it is set again.

    def close(self) -> None:
        """Cancel everything scheduled."""
        self._alarm.close()
        self._wake_at = math.inf
        self._heap.clear()
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def _drop_cancelled_head(self) -> None:
        # Things end mostly in the order they were scheduled: dropping cancelled
        # entries at the head keeps the heap about as long as what is scheduled.
        heap, items = self._heap, self._items
        while heap and heap[0][1] not in items:
            heapq.heappop(heap)

    def _set_alarm(self, when: float) -> None:
        self._wake_at = when
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._clock = loop_clock(loop)
        self._alarm.set(when, loop)

    def fire_due(self, now: float) -> None:
        """Fire now what is due at loop time `now`, without waiting for the alarm.

        For whoever is about to look for work (a worker taking its next key
        while the loop is busy with it): a key that came due meanwhile is
        served in that look, not after the loop's next turn runs the alarm.
        The alarm stays set; ringing early, it is set again for what is left."""
        heap = self._heap
        if heap and heap[0][0] <= now:
            for item in self._pop_due(now):
                self._fire(item)

    def _pop_due(self, now: float) -> list[_Item]:
        heap, items = self._heap, self._items
        due = []
        while heap and heap[0][0] <= now:
            _, token = heapq.heappop(heap)
            if token in items:
                due.append(items.pop(token))
        self._drop_cancelled_head()
        return due

    def _run(self) -> None:
        now = self._clock()
        heap = self._heap
        due = self._pop_due(now)
        if not heap:
            self._wake_at = math.inf
        elif heap[0][0] - now < _ONE_TURN:
            # A burst: the next is due about when what fires now has been served.
            # Look again after one turn of the loop rather than set the alarm
            # (two system calls) for every item of the burst.
            self._wake_at = heap[0][0]
            if not self._check_pending:
                self._check_pending = True
                assert self._loop is not None  # set with the alarm that led here
                self._loop.call_soon(self._check)
        else:
            self._set_alarm(heap[0][0])
        for item in due:
            self._fire(item)

    def _check(self) -> None:
        self._check_pending = False
        heap = self._heap
        if not heap:
            self._wake_at = math.inf
        elif heap[0][0] <= self._clock():
            self._run()
        else:
            self._set_alarm(heap[0][0])  # not yet: no second look, the alarm
