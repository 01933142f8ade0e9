"""Faults the tests inject into processes the project started itself."""

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.background import repeated


@contextmanager
def paused_in_bursts(pid: int, *, pause: float, run: float) -> Iterator[None]:
    """Process `pid` stopped for `pause` seconds, let run for `run`, in turns, while
    the block runs; always left running. A slow process without netem or cgroup
    throttling: what waits on it waits about `pause` at a time."""

    def burst() -> None:
        os.kill(pid, signal.SIGSTOP)
        time.sleep(pause)
        os.kill(pid, signal.SIGCONT)

    try:
        with repeated(burst, every=run):
            yield
    finally:
        os.kill(pid, signal.SIGCONT)
