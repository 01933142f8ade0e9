"""The runtime's timers on asyncio's own loop (real time): a Linux timerfd wakes it.

Nothing here asserts how soon a timer fires (the machine decides that); what
must hold on any machine: never before its time, every one, in time order, and
the descriptor given back.
"""

import asyncio
import gc
import os
import sys

import pytest

from wukong.runtime._alarm import Alarm
from wukong.runtime._timers import Timers

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="timerfd is Linux's")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Fired:
    def __init__(self) -> None:
        self.at: list[tuple[int, float, float]] = []  # (item, due, fired)
        self.all = asyncio.Event()
        self.expected = 0

    def __call__(self, item: tuple[int, float]) -> None:
        number, due = item
        self.at.append((number, due, asyncio.get_running_loop().time()))
        if len(self.at) == self.expected:
            self.all.set()


@linux_only
async def test_a_burst_fires_every_timer_in_order_and_none_early() -> None:
    """Fifty timers 20 us apart (a requeue burst), then a lone one after a gap."""
    fired = Fired()
    timers: Timers[tuple[int, float]] = Timers(fired)
    start = asyncio.get_running_loop().time() + 0.01
    dues = [start + index * 20e-6 for index in range(50)] + [start + 0.05]
    fired.expected = len(dues)
    for number, due in reversed(list(enumerate(dues))):  # scheduled latest first
        timers.schedule(due, (number, due))
    await asyncio.wait_for(fired.all.wait(), timeout=10)
    assert [number for number, _, _ in fired.at] == list(range(len(dues)))
    early = [(number, at - due) for number, due, at in fired.at if at < due]
    assert early == []
    timers.close()


@linux_only
async def test_asyncio_s_own_loop_gets_a_timerfd_and_it_is_given_back() -> None:
    rang = asyncio.Event()
    before = open_fds()
    alarm = Alarm(rang.set)
    alarm.set(asyncio.get_running_loop().time() + 0.001)
    assert alarm._fd is not None  # the exact path, not call_at
    assert open_fds() == before + 1
    await asyncio.wait_for(rang.wait(), timeout=10)
    alarm.close()
    assert open_fds() == before


@linux_only
async def test_a_dropped_alarm_gives_its_descriptor_back() -> None:
    before = open_fds()
    alarm = Alarm(lambda: None)
    alarm.set(asyncio.get_running_loop().time() + 60)
    assert open_fds() == before + 1
    del alarm
    gc.collect()
    assert open_fds() == before


@pytest.mark.looptime
async def test_a_virtual_clock_gets_call_at() -> None:
    """looptime's loop has a clock of its own: a timerfd would ring in real time."""
    rang = asyncio.Event()
    alarm = Alarm(rang.set)
    alarm.set(asyncio.get_running_loop().time() + 5)
    assert alarm._fd is None
    await asyncio.wait_for(rang.wait(), timeout=10)
    alarm.close()


@linux_only
async def test_a_timerfd_that_fails_falls_back_to_the_loop_s_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from wukong.runtime import _alarm

    def refuse(self: object, when: float) -> None:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(_alarm._TimerFd, "set", refuse)
    before = open_fds()
    rang = asyncio.Event()
    alarm = Alarm(rang.set)
    alarm.set(asyncio.get_running_loop().time() + 0.001)
    assert alarm._fd is None and open_fds() == before  # given back at once
    await asyncio.wait_for(rang.wait(), timeout=10)
