"""Work a test keeps doing in a thread while its block runs (load, faults, polling)."""

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Repeating:
    """`step` called in a daemon thread at once, then `every` seconds after each call
    ends, until `stop`: stopping wakes the wait, so it returns within one step."""

    def __init__(self, step: Callable[[], object], every: float) -> None:
        self._step, self._every = step, every
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._step()
            self._stopped.wait(self._every)

    def start(self) -> "Repeating":
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Ask for no more steps and wait for the one under way (up to `timeout`)."""
        self._stopped.set()
        self._thread.join(timeout)


@contextmanager
def repeated(step: Callable[[], object], every: float) -> Iterator[None]:
    """`step` repeated in a thread (see `Repeating`) while the block runs."""
    repeating = Repeating(step, every).start()
    try:
        yield
    finally:
        repeating.stop()
