"""Detects blocking code: an event loop that stopped turning.

A reconcile that calls blocking code (`time.sleep`, a synchronous HTTP client,
a CPU-bound loop) holds the whole event loop: no other reconcile runs, no
lease is renewed, and its own deadline cannot fire, because cancellation in
asyncio is delivered at an `await`. Nothing inside the loop can see this, so a
watchdog thread does: the loop bumps a heartbeat every `threshold / 4`
seconds; when the thread finds the heartbeat older than `threshold`, it logs a
WARNING naming the task that is running (reconcile tasks are named
`reconcile <controller> <namespace/name>`), once per blocked stretch, and
reports it to the observer (`loop_blocked`) on the loop once it turns again.
"""

import asyncio
import logging
import threading
import time

from wukong.runtime._fanout import NO_OBSERVER
from wukong.runtime._observer import RuntimeObserver

log = logging.getLogger(__name__)


class LoopBlockDetector:
    def __init__(self, *, threshold: float = 1.0, observer: RuntimeObserver = NO_OBSERVER) -> None:
        if threshold <= 0:
            raise ValueError("threshold must be positive")
        self.threshold = threshold
        self._observer = observer
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._heartbeat()
        self._thread = threading.Thread(target=self._watch, name="loop-block-detector", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
        if self._thread is not None:
            self._thread.join(timeout=self.threshold)

    def _heartbeat(self) -> None:
        assert self._loop is not None
        self._beat = time.monotonic()
        self._handle = self._loop.call_later(self.threshold / 4, self._heartbeat)

    def _watch(self) -> None:
        reported_beat: float | None = None
        while not self._stop.wait(self.threshold / 4):
            beat = self._beat
            blocked = time.monotonic() - beat
            if blocked < self.threshold or beat == reported_beat:
                continue
            reported_beat = beat
            task = self._running_task()
            log.warning(
                "event loop blocked for %.1fs in %s: blocking code cannot be cancelled and "
                "stalls every reconcile; use await-able calls or asyncio.to_thread",
                blocked,
                task or "no task",
            )
            # Observers run on the loop, never on this thread; the call waits
            # in the loop's queue until the blocking code lets go.
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._observer.loop_blocked, blocked, task)

    def _running_task(self) -> str | None:
        # Read from another thread: a plain dict lookup under the GIL, racy only
        # in that the task may have just changed, which is good enough for a report.
        tasks = getattr(asyncio.tasks, "_current_tasks", {})
        task = tasks.get(self._loop)
        return task.get_name() if task is not None else None
