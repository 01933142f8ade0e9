"""Faults the tests inject into processes the project started itself."""

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_in_bursts(pid: int, *, pause: float, run: float) -> Iterator[None]:
    """Process `pid` stopped for `pause` seconds, let run for `run`, in turns, while
    the block runs; always left running. A slow process without netem or cgroup
    throttling: what waits on it waits about `pause` at a time."""
    stop = threading.Event()

    def bursts() -> None:
        while not stop.is_set():
            os.kill(pid, signal.SIGSTOP)
            time.sleep(pause)
            os.kill(pid, signal.SIGCONT)
            time.sleep(run)

    thread = threading.Thread(target=bursts, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        os.kill(pid, signal.SIGCONT)
