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

and prints the process's CPU per reconcile and its share of the wall time;
how many bursts (keys due within the same second) the latest 1 % of requeues
came from and how many of them waited through a pass of the garbage
collector; the longest gap between two reconciles within a burst (a pause of
the loop); the collector's passes while requeueing, by generation; and how
late the queue's alarm rings (set time -> its callback running).

    .venv/bin/python bench/requeue_profile.py [--objects 200] [--seconds 12]
        [--turn S] [--alarm timerfd|call_at] [--gc-threshold0 N] [--dump FILE]

`--turn`, `--alarm` and `--gc-threshold0` try variants in this process, for
A/B runs of one tree: a worker's turn (`_running._TURN`), the queue's alarm as
a plain `loop.call_at`, the collector's first threshold. `--dump` writes every
requeue (due, its three parts, when its body ran and the thread's CPU time
then) as JSON, to see a burst key by key.
"""

import argparse
import asyncio
import gc
import itertools
import json
import resource
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
    _alarm,
    _running,
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
        self.body: list[float] = []  # when each requeue's body ran, in the order of the parts
        self.cpu_at_body: list[float] | None = None  # the thread's CPU time then (--dump)
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
            self.body.append(at)
            if self.cpu_at_body is not None:
                self.cpu_at_body.append(time.thread_time())


class Pauses:
    """The garbage collector's passes (loop clock): (generation, began, ended)."""

    def __init__(self) -> None:
        self.passes: list[tuple[int, float, float]] = []
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.monotonic()
        else:
            self.passes.append((info["generation"], self._began, time.monotonic()))


class AlarmLateness:
    """How late each of the queue's alarms rings: its callback's start - the time set."""

    def __init__(self) -> None:
        self.late: list[float] = []
        self._set_at: dict[int, float] = {}
        set_, ring = _alarm.Alarm.set, _alarm.Alarm._ring
        watched = self

        def set_alarm(
            alarm: _alarm.Alarm, when: float, loop: asyncio.AbstractEventLoop | None = None
        ) -> None:
            watched._set_at[id(alarm)] = when
            set_(alarm, when, loop)

        def ring_alarm(alarm: _alarm.Alarm) -> None:
            when = watched._set_at.pop(id(alarm), None)
            if when is not None and getattr(alarm._callback, "__name__", "") == "_run":
                watched.late.append(time.monotonic() - when)  # a queue's Timers
            ring(alarm)

        _alarm.Alarm.set = set_alarm  # type: ignore[method-assign, assignment]
        _alarm.Alarm._ring = ring_alarm  # type: ignore[method-assign, assignment]


class Requeuer:
    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.reconciles = 0

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        self.timeline.body_ran(request, asyncio.get_running_loop().time())
        self.reconciles += 1
        return Result(requeue_after=1.0)


async def run(kubeconfig: Path, objects: int, seconds: float, *, dump: bool = False) -> object:
    """Profile, print and write the fragment; what `--dump` writes (None without it)."""
    timeline = Timeline()
    if dump:
        timeline.cpu_at_body = []
    alarms = AlarmLateness()
    pauses = Pauses()
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
        usage = resource.getrusage(resource.RUSAGE_SELF)
        measured_from = len(timeline.body)
        alarms.late.clear()
        gc.callbacks.append(pauses)
        await asyncio.sleep(seconds)
        gc.callbacks.remove(pauses)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        usage_after = resource.getrusage(resource.RUSAGE_SELF)
        reconciles = requeuer.reconciles - reconciles
        manager.stop()
        await running

    parts = {
        "timer: due -> back in the queue": timeline.timer,
        "queue: waiting for a free worker": timeline.queue,
        "first step: taken -> body running": timeline.first_step,
    }
    lateness = [sum(values) for values in zip(*parts.values(), strict=True)]
    measured = list(zip(timeline.due, lateness, timeline.body, strict=False))[measured_from:]
    # The latest 1 % of requeues: how many bursts they came from (keys due within
    # 0.1 s of one another), and how many waited through one of the collector's passes.
    worst = sorted(measured, key=lambda m: m[1])[-max(1, len(measured) // 100) :]
    bursts = {round(due - measured[0][0]) for due, _, _ in worst}
    through_pause = sum(
        any(began < body and ended > body - late for _, began, ended in pauses.passes)
        for _, late, body in worst
    )
    # A pause of the loop within a burst shows as a gap between two reconciles.
    bodies = sorted(body for _, _, body in measured)
    longest_gap = max((b - a for a, b in itertools.pairwise(bodies) if b - a < 0.1), default=0.0)
    # From the first requeue's due time on (not the start-up heap's freeze, a full pass).
    requeueing = [(gen, b, e) for gen, b, e in pauses.passes if b >= measured[0][0]]
    by_generation = {g: [(e - b) * 1000 for gen, b, e in requeueing if gen == g] for g in (0, 1, 2)}
    collector = "; ".join(
        f"gen{g}: {len(ms)} passes, longest {max(ms, default=0):.2f} ms"
        for g, ms in by_generation.items()
    )
    alarm_late = sorted(alarms.late) or [0.0]
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
    print(
        f"the latest {len(worst)} requeues (1 %) came from {len(bursts)} burst(s), "
        f"{through_pause} waited through a pass of the collector; the longest gap between two "
        f"reconciles within a burst {longest_gap * 1000:.2f} ms"
    )
    print(f"collector while requeueing: {collector}")
    # A wait within a burst that used no CPU: the kernel's (preempted, or a page read back in).
    print(
        "the process over the run: "
        f"{usage_after.ru_nivcsw - usage.ru_nivcsw} involuntary context switches, "
        f"{usage_after.ru_majflt - usage.ru_majflt} major page faults"
    )
    print(
        f"queue's alarm, set time -> ringing: p50 {percentile(alarm_late, 0.5) * 1000:.3f} ms, "
        f"p99 {percentile(alarm_late, 0.99) * 1000:.3f} ms, max {alarm_late[-1] * 1000:.3f} ms "
        f"({len(alarms.late)} rings)"
    )
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
    if not dump:
        return None
    values = zip(
        timeline.due, *parts.values(), timeline.body, timeline.cpu_at_body or [], strict=False
    )
    return {
        "requeues": [list(requeue) for requeue in values][measured_from:],
        "collector": pauses.passes,
        "alarm_late": alarms.late,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--turn", type=float, help="a worker's turn (s), instead of _TURN")
    parser.add_argument("--alarm", choices=["timerfd", "call_at"], default="timerfd")
    parser.add_argument("--gc-threshold0", type=int, help="the collector's first threshold")
    parser.add_argument(
        "--dump",
        type=Path,
        help="write each requeue as JSON: due, its three parts, body ran, the thread's CPU time",
    )
    args = parser.parse_args()
    if args.turn is not None:
        _running._TURN = args.turn
    if args.alarm == "call_at":  # as where no timerfd can be had
        _alarm._LIBC = None
    if args.gc_threshold0 is not None:
        gc.set_threshold(args.gc_threshold0, *gc.get_threshold()[1:])
    with ephemeral_control_plane(progress=lambda m: print(m, file=sys.stderr)) as plane:
        dumped = asyncio.run(
            run(plane.kubeconfig, args.objects, args.seconds, dump=args.dump is not None)
        )
    if args.dump is not None:
        args.dump.write_text(json.dumps(dumped))
    return 0


if __name__ == "__main__":
    sys.exit(main())
