"""Keeps the objects of start-up out of the garbage collector's full collections.

CPython's cyclic collector stops the event loop for every collection, and a
full (generation 2) collection walks every tracked object in the process.
Most of them are created at start-up and live as long as the process: the
functions, classes and dicts of every imported module (about 80,000 objects
once the runtime and its HTTP and Kubernetes client libraries are imported),
plus the manager's own informers, clients and sessions. A full collection
comes every few seconds at a few hundred reconciles a second, and walking
that heap took 80-100 ms on the benchmark machine: every timer due in that
stretch (a `RequeueAfter`, a deadline) fires that much later, and every event
waits as long before its reconcile starts (bench/RESULTS.md, "where the time
goes").

`freeze_startup_heap` collects once and then moves every object still alive
to the permanent generation (`gc.freeze`), where later collections never look:
full collections then walk only what was allocated since. It is done once per
process, when the first manager's caches are synced (the process is then as
big as it will be at start-up, and no reconcile runs yet). Frozen objects are
still freed when their reference count drops to zero; only a reference cycle
among them would outlive its use, which is why garbage is collected first.
"""

import gc
import logging
import time

log = logging.getLogger(__name__)


class HeapFreezer:
    """Freezes the start-up heap once (per instance; the runtime uses `STARTUP`)."""

    def __init__(self) -> None:
        self.frozen = False

    def freeze_once(self) -> bool:
        """Collect, then freeze what is alive; False (and nothing done) after the first time."""
        if self.frozen:
            return False
        self.frozen = True
        began = time.perf_counter()
        gc.collect()
        gc.freeze()
        log.debug(
            "froze %d start-up objects out of the garbage collector's way in %.1f ms",
            gc.get_freeze_count(),
            (time.perf_counter() - began) * 1000,
        )
        return True


STARTUP = HeapFreezer()  # one per process: the heap is the process's
