"""Many timers on one loop timer: each fires at its time, in order, unless cancelled.

On a virtual clock (looptime): the loop's time jumps to the next timer, so the
times recorded here are exact.
"""

import asyncio

import pytest

from wukong.runtime._timers import Timers

pytestmark = pytest.mark.looptime


class Fired:
    def __init__(self) -> None:
        self.at: list[tuple[str, float]] = []

    def __call__(self, item: str) -> None:
        self.at.append((item, asyncio.get_running_loop().time()))


def now() -> float:
    return asyncio.get_running_loop().time()


async def test_each_fires_at_its_time_in_time_order_whatever_the_order_scheduled() -> None:
    fired = Fired()
    timers = Timers(fired)
    start = now()
    timers.schedule(start + 3, "c")
    timers.schedule(start + 1, "a")  # earlier than what the loop timer is armed for
    timers.schedule(start + 2, "b")
    timers.schedule(start + 2, "b2")  # same time: in the order scheduled
    assert len(timers) == 4
    await asyncio.sleep(5)
    assert fired.at == [("a", start + 1), ("b", start + 2), ("b2", start + 2), ("c", start + 3)]
    assert len(timers) == 0


async def test_a_cancelled_timer_never_fires_and_the_others_still_do() -> None:
    fired = Fired()
    timers = Timers(fired)
    start = now()
    first = timers.schedule(start + 1, "first")  # the one the loop timer is armed for
    timers.schedule(start + 2, "second")
    middle = timers.schedule(start + 1.5, "middle")
    timers.cancel(first)
    timers.cancel(middle)
    timers.cancel(middle)  # twice: nothing more happens
    assert len(timers) == 1
    await asyncio.sleep(3)
    assert fired.at == [("second", start + 2)]


async def test_cancelling_after_it_fired_changes_nothing() -> None:
    fired = Fired()
    timers = Timers(fired)
    token = timers.schedule(now() + 1, "x")
    await asyncio.sleep(2)
    timers.cancel(token)
    assert [item for item, _ in fired.at] == ["x"]


async def test_fire_may_schedule_again() -> None:
    """A requeue schedules the next one from the callback of the last."""
    fired = Fired()
    timers: Timers[str] = Timers(lambda item: (fired(item), timers.schedule(now() + 1, item)))
    start = now()
    timers.schedule(start + 1, "again")
    await asyncio.sleep(3.5)
    assert fired.at == [("again", start + 1), ("again", start + 2), ("again", start + 3)]


async def test_fire_due_fires_what_is_due_before_the_alarm_and_only_once() -> None:
    """Someone about to look for work fires what is due; the alarm, set for the
    earliest, finds nothing of it to fire again and still fires the rest."""
    fired = Fired()
    timers = Timers(fired)
    start = now()
    timers.schedule(start + 1, "a")
    timers.schedule(start + 1.5, "b")
    timers.schedule(start + 2, "c")
    timers.fire_due(start + 0.5)  # nothing due yet
    assert fired.at == []
    timers.fire_due(start + 1.5)
    assert [item for item, _ in fired.at] == ["a", "b"]
    assert len(timers) == 1
    await asyncio.sleep(3)
    assert fired.at[2:] == [("c", start + 2)]


async def test_close_cancels_everything() -> None:
    fired = Fired()
    timers = Timers(fired)
    timers.schedule(now() + 1, "a")
    timers.schedule(now() + 2, "b")
    timers.close()
    assert len(timers) == 0
    await asyncio.sleep(3)
    assert fired.at == []
