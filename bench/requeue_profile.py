"""Where a requeued key's lateness goes, in Wukong's runtime (a profile, no peer).

`compare_peers.py` measures requeue lateness against controller-runtime from
each peer's own timeline. This runs the same load in process (K objects,
each reconcile a no-op returning RequeueAfter 1 s, 4 workers, 12 s) with an
observer, and splits each requeue's lateness (reconcile body started - due)
into its three parts, all on the event loop's clock:

1. timer: due -> the key back in the queue (the queue's alarm, or a worker
   taking its next key, bringing it in);
2. queue: in the queue -> taken by a worker (`queue_got`'s wait: keys due
   together are served one after another; a key that finds a place free
   waits for its worker task's first step, one turn of the loop);
3. first step: taken -> the reconcile's body running (a worker takes a key
   and runs its body in the same step).

and prints the process's CPU per reconcile and its share of the wall time.

    .venv/bin/python bench/requeue_profile.py [--objects 200] [--seconds 12]
"""

import argparse
import asyncio
import itertools
import statistics
import sys
import time
from pathlib import Path

from results import percentile, print_table, write_fragment

from wukong.devcluster import ephemeral_control_plane
from wukong.runtime import (
    Client,
    Controller,
    ControllerOptions,
    Manager,
    ManagerOptions,
    ReconcileContext,
    Request,
    Result,
    RuntimeObserver,
)
from wukong.runtime.observe import LifecycleEvent, Step
from wukong.runtime.resources import CONFIGMAPS, NAMESPACES

NAMESPACE = "requeue-profile"
WORKERS = 4


class Timeline(RuntimeObserver):
    """Each requeue's parts (seconds). `queue_got` comes right before the STARTED of
    the key it handed out (both in a worker's take of a key: `try_get`, then STARTED)."""

    def __init__(self) -> None:
        self.timer: list[float] = []
        self.queue: list[float] = []
        self.first_step: list[float] = []
        self.due: list[float] = []  # every requeue's due time
        self._waited = 0.0
        # Started requeues whose body has not run yet: (timer, queue, started).
        self._pending: dict[Request, tuple[float, float, float]] = {}

    def queue_got(self, queue: str, waited: float) -> None:
        self._waited = waited

    def reconcile(self, event: LifecycleEvent) -> None:
        ctx = event.context
        if event.step is Step.STARTED and ctx.due_at is not None:
            timer = ctx.started - ctx.due_at - self._waited
            self.due.append(ctx.due_at)
            self._pending[ctx.request] = (timer, self._waited, ctx.started)

    def body_ran(self, request: Request, at: float) -> None:
        pending = self._pending.pop(request, None)
        if pending is not None:
            timer, waited, started = pending
            self.timer.append(timer)
            self.queue.append(waited)
            self.first_step.append(at - started)


class Requeuer:
    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.reconciles = 0

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        self.timeline.body_ran(request, asyncio.get_running_loop().time())
        self.reconciles += 1
        return Result(requeue_after=1.0)


async def run(kubeconfig: Path, objects: int, seconds: float) -> None:
    timeline = Timeline()
    requeuer = Requeuer(timeline)
    async with await Client.from_kubeconfig(kubeconfig) as client:
        await client.create(NAMESPACES, {"metadata": {"name": NAMESPACE}})
        for index in range(objects):
            metadata = {"name": f"obj-{index:04d}", "namespace": NAMESPACE}
            await client.create(CONFIGMAPS, {"metadata": metadata, "data": {"payload": "x" * 512}})
        manager = Manager(
            client=client,
            observers=[timeline],
            options=ManagerOptions(namespace=NAMESPACE, block_warning_seconds=None),
        )
        manager.add(
            Controller(
                name="requeue",
                reconciler=requeuer,
                primary=CONFIGMAPS,
                options=ControllerOptions(max_concurrent_reconciles=WORKERS),
            )
        )
        running = asyncio.create_task(manager.run())
        await manager.informer(CONFIGMAPS).synced.wait()
        cpu, wall, reconciles = time.process_time(), time.monotonic(), requeuer.reconciles
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        reconciles = requeuer.reconciles - reconciles
        manager.stop()
        await running

    parts = {
        "timer: due -> back in the queue": timeline.timer,
        "queue: waiting for a free worker": timeline.queue,
        "first step: taken -> body running": timeline.first_step,
    }
    lateness = [sum(values) for values in zip(*parts.values(), strict=True)]
    rows = [
        [part, f"{percentile(values, 0.5) * 1000:.2f}", f"{percentile(values, 0.99) * 1000:.2f}"]
        for part, values in {**parts, "lateness (the three together)": lateness}.items()
    ]
    # Keys due together wait for one another: how close their due times are,
    # against what each reconcile costs.
    due = sorted(timeline.due)
    gap = statistics.median(b - a for a, b in itertools.pairwise(due))
    load = (
        f"CPU per reconcile {cpu / reconciles * 1e6:.0f} us; the process used "
        f"{cpu / wall * 100:.1f} % of a core over the run; median gap between one "
        f"requeue's due time and the next's {gap * 1e6:.0f} us"
    )
    header = ["part of a requeue's lateness", "p50 (ms)", "p99 (ms)"]
    print(f"objects: {objects}, {reconciles} reconciles in {seconds:.0f} s, {WORKERS} workers")
    print_table(header, rows)
    print(load)
    write_fragment(
        "requeue_profile",
        title=f"Requeue lateness, where it goes ({objects} objects, RequeueAfter 1 s, in process)",
        header=header,
        rows=rows,
        notes=[
            "A profile, no peer: Wukong's runtime with a no-op reconciler in this process, "
            f"{seconds:.0f} s; each requeue's lateness split on the event loop's clock by an "
            "observer (`bench/requeue_profile.py`). The parts add up to the lateness "
            "`compare_peers.py` measures from the peer's own output (which adds writing it).",
            load + ".",
        ],
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=12.0)
    args = parser.parse_args()
    with ephemeral_control_plane(progress=lambda m: print(m, file=sys.stderr)) as plane:
        asyncio.run(run(plane.kubeconfig, args.objects, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
