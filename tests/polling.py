"""Waiting in tests: poll a check until it holds, or fail naming what was awaited.

The one way tests wait, sync (kubectl, a BPF map) or inside an event loop (an
API call): look at once, then every `interval` seconds (50 ms unless given;
checks that run a program, such as kubectl, ask for more).
"""

import asyncio
import time
from collections.abc import Awaitable, Callable

DEFAULT_INTERVAL = 0.05


def _timed_out(timeout: float, what: str) -> AssertionError:
    return AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_until(
    check: Callable[[], bool],
    what: str = "condition",
    *,
    timeout: float = 20.0,
    interval: float = DEFAULT_INTERVAL,
) -> None:
    """Call `check` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what)
        time.sleep(interval)


async def eventually(
    check: Callable[[], Awaitable[bool] | bool],
    what: str = "condition",
    *,
    timeout: float = 20.0,
    interval: float = DEFAULT_INTERVAL,
) -> None:
    """`wait_until` inside an event loop, on the loop's clock: `check` may be async."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if loop.time() > deadline:
            raise _timed_out(timeout, what)
        await asyncio.sleep(interval)
