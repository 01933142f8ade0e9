"""Many timers on one event-loop timer.

A controller schedules a deadline for every reconcile and a work queue one
timer for every delayed key: hundreds a second, almost all of them cancelled
or never late. As `loop.call_at` handles each costs a handle, a push on the
loop's heap (ordered by a comparison written in Python) and, once cancelled,
a pop or a clean-up of that heap later. `Timers` keeps its due times in a heap
of plain tuples (compared in C) and arms one loop timer, for the earliest
(client-go's delaying queue does the same with one timer and a heap).
"""

import asyncio
import heapq
import math
from collections.abc import Callable
from typing import Generic, TypeVar

_Item = TypeVar("_Item")
_CANCELLED = object()


class Timers(Generic[_Item]):
    """Calls `fire(item)` at each scheduled time unless cancelled first, in time order."""

    def __init__(self, fire: Callable[[_Item], None]) -> None:
        self._fire = fire
        self._heap: list[tuple[float, int]] = []  # (loop time, token), cancelled ones too
        self._items: dict[int, _Item] = {}  # token -> item, scheduled and not cancelled
        self._next_token = 0
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = math.inf

    def schedule(self, when: float, item: _Item) -> int:
        """Fire `item` at loop time `when`; the token cancels it."""
        token = self._next_token
        self._next_token += 1
        self._items[token] = item
        heapq.heappush(self._heap, (when, token))
        if when < self._armed_for:
            self._arm(when)
        return token

    def cancel(self, token: int) -> None:
        """Never fire what `token` scheduled (nothing if it fired or was cancelled)."""
        if self._items.pop(token, _CANCELLED) is _CANCELLED:
            return
        self._drop_cancelled_head()
        # The loop timer stays armed: if nothing is due when it fires, it re-arms.

    def close(self) -> None:
        """Cancel everything scheduled."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._armed_for = None, math.inf
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

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(when, self._run)
        self._armed_for = when

    def _run(self) -> None:
        self._timer, self._armed_for = None, math.inf
        now = asyncio.get_running_loop().time()
        heap, items = self._heap, self._items
        due = []
        while heap and heap[0][0] <= now:
            _, token = heapq.heappop(heap)
            if token in items:
                due.append(items.pop(token))
        self._drop_cancelled_head()
        if heap:
            self._arm(heap[0][0])
        for item in due:
            self._fire(item)
