"""Fair reconciling per namespace: quiet tenants next to a storming one.

On a real local control plane (started here, on free ports), with the Wukong
CRD and a reconciler that is slow in one namespace:

- `noisy`: 1,000 Wukongs whose reconciles each take `--slow` seconds and ask
  to run again at once (`RequeueAfter` 10 ms): a standing backlog of 1,000
  keys for as long as the run lasts, a tenant in a reconcile storm.
- `quiet-0` .. `quiet-9`: one Wukong each, patched every `--interval`
  seconds (an annotation carries a sequence number); their reconciles are
  instant. Event -> reconcile latency is the start of the first reconcile
  that reads the new sequence number from the cache minus when the patch was
  sent.

The same quiet events are measured four times, each with a fresh manager of
`--workers` workers:

1. idle: no noisy Wukongs yet (the peer every ratio is taken against);
2. fair + cap: namespaces served round-robin and at most `--cap` reconciles
   of one namespace at once while another has work waiting
   (`--max-concurrent-reconciles-per-namespace`; by default `wukong run`'s
   own, half the workers). The cap never leaves a worker idle: a quiet key
   that arrives while the noisy tenant holds every worker waits for one of
   its reconciles to end;
3. fair: round-robin only (every worker can be busy with the noisy tenant);
4. unfair: one FIFO queue for all namespaces, as controller-runtime has.

    .venv/bin/python bench/tenant_fairness.py [--noisy 1000] [--slow 0.1]
"""

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from results import percentile, write_fragment

from wukong.devcluster import ephemeral_control_plane
from wukong.devcluster.crds import install_crds
from wukong.operator.api import WUKONGS
from wukong.operator.crd import wukong_crd
from wukong.operator.run import OperatorSettings
from wukong.runtime import (
    Client,
    Controller,
    ControllerOptions,
    Manager,
    ManagerOptions,
    Object,
    ReconcileContext,
    Request,
    Result,
    Store,
)
from wukong.runtime.resources import NAMESPACES

NOISY = "noisy"
QUIET = [f"quiet-{index}" for index in range(10)]
QUIET_NAME = "vm"
SEQUENCE = "bench.wukong/sequence"


class TenantReconciler:
    """Slow, and at once requeued, in the noisy namespace; in quiet ones, records when the
    reconcile that serves each sequence number started."""

    def __init__(self, *, slow: float) -> None:
        self.slow = slow
        self.store: Store | None = None
        self.served: dict[tuple[str, int], float] = {}  # (namespace, sequence) -> started

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        if request.namespace == NOISY:
            await asyncio.sleep(self.slow)
            return Result(requeue_after=0.01)
        started = time.monotonic()
        assert self.store is not None
        obj = self.store.get_by_name(request.namespace, request.name)
        if obj is not None:
            sequence = int((obj["metadata"].get("annotations") or {}).get(SEQUENCE, "0"))
            for seen in range(sequence + 1):
                self.served.setdefault((request.namespace, seen), started)
        return Result()


@dataclass(frozen=True)
class Mode:
    name: str
    options: ControllerOptions


def _wukong(name: str) -> Object:
    return {
        "apiVersion": WUKONGS.api_version,
        "kind": WUKONGS.kind,
        "metadata": {"name": name},
        "spec": {"cpu": 1, "memory": "1Gi"},
    }


async def _quiet_latencies(
    client: Client, mode: Mode, *, slow: float, rounds: int, interval: float, first: int
) -> list[float]:
    """Run a manager in `mode`, patch every quiet Wukong `rounds` times; latencies in ms."""
    reconciler = TenantReconciler(slow=slow)
    manager = Manager(client=client, options=ManagerOptions(block_warning_seconds=None))
    reconciler.store = manager.informer(WUKONGS).store
    manager.add(
        Controller(name="tenants", reconciler=reconciler, primary=WUKONGS, options=mode.options)
    )
    running = asyncio.create_task(manager.run())
    await manager.informer(WUKONGS).synced.wait()
    await asyncio.sleep(2.0)  # the storm (if any) is under way
    sent: dict[tuple[str, int], float] = {}
    step = interval / len(QUIET)
    for sequence in range(first, first + rounds):
        for namespace in QUIET:
            patch = {"metadata": {"annotations": {SEQUENCE: str(sequence)}}}
            sent[(namespace, sequence)] = time.monotonic()
            await client.patch(WUKONGS, QUIET_NAME, patch, namespace=namespace)
            await asyncio.sleep(step)
    deadline = time.monotonic() + 600
    while not all(key in reconciler.served for key in sent):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{mode.name}: quiet events not reconciled within 600 s")
        await asyncio.sleep(0.1)
    manager.stop()
    await running
    return [(reconciler.served[key] - at) * 1000 for key, at in sent.items()]


async def run(
    kubeconfig: Path,
    *,
    noisy: int,
    slow: float,
    workers: int,
    cap: int,
    rounds: int,
    interval: float,
) -> None:
    modes = {
        "fair + cap": Mode(
            f"fair, at most {cap} per namespace",
            ControllerOptions(
                max_concurrent_reconciles=workers, max_concurrent_reconciles_per_namespace=cap
            ),
        ),
        "fair": Mode("fair", ControllerOptions(max_concurrent_reconciles=workers)),
        "unfair": Mode(
            "unfair (one FIFO)",
            ControllerOptions(max_concurrent_reconciles=workers, fair_namespaces=False),
        ),
    }
    results: dict[str, list[float]] = {}
    async with await Client.from_kubeconfig(kubeconfig) as client:
        await install_crds(client, [wukong_crd()])
        for namespace in [NOISY, *QUIET]:
            await client.create(NAMESPACES, {"metadata": {"name": namespace}})
        for namespace in QUIET:
            await client.create(WUKONGS, _wukong(QUIET_NAME), namespace=namespace)
        sequence = 1
        results["idle"] = await _quiet_latencies(
            client, modes["fair + cap"], slow=slow, rounds=rounds, interval=interval, first=sequence
        )
        sequence += rounds
        limit = asyncio.Semaphore(16)

        async def create(index: int) -> None:
            async with limit:
                await client.create(WUKONGS, _wukong(f"vm-{index:04d}"), namespace=NOISY)

        await asyncio.gather(*(create(index) for index in range(noisy)))
        for key, mode in modes.items():
            results[key] = await _quiet_latencies(
                client, mode, slow=slow, rounds=rounds, interval=interval, first=sequence
            )
            sequence += rounds

    idle_p50, idle_p99 = percentile(results["idle"], 0.5), percentile(results["idle"], 0.99)
    print(
        f"noisy: {noisy} Wukongs, {slow:g} s reconciles requeued at once; "
        f"{len(QUIET)} quiet namespaces x {rounds} events; {workers} workers"
    )
    print("quiet namespaces' event -> reconcile (patch sent -> reconcile that reads it started):")
    rows = []
    for key, values in results.items():
        name = "idle (no noisy tenant)" if key == "idle" else modes[key].name
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        print(
            f"  {name:<34} p50 {p50:9.1f} ms   p99 {p99:9.1f} ms   mean "
            f"{statistics.fmean(values):9.1f} ms   p99 / idle p99 {p99 / idle_p99:8.2f}"
        )
        rows.append(
            [
                name,
                f"{p50:.1f} ms",
                f"{p99:.1f} ms",
                f"{p50 / idle_p50:.2f}",
                f"{p99 / idle_p99:.2f}",
            ]
        )
    write_fragment(
        "tenant_fairness",
        title=f"Quiet namespaces next to one with {noisy} slow Wukongs ({workers} workers)",
        header=["queue", "quiet p50", "quiet p99", "p50 / idle", "p99 / idle"],
        rows=rows,
        notes=[
            f"The noisy namespace's {noisy} reconciles each take {slow:g} s and requeue at once "
            f"(a standing backlog); {len(QUIET)} quiet namespaces get {rounds} patches each.",
            "Ratios against the idle run (same quiet events, no noisy Wukongs) in the same "
            "process and API server.",
        ],
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--noisy", type=int, default=1000, help="Wukongs in the noisy namespace")
    parser.add_argument("--slow", type=float, default=0.1, help="seconds per noisy reconcile")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--cap",
        type=int,
        default=None,
        help="reconciles per namespace (fair + cap; default: wukong run's, half the workers)",
    )
    parser.add_argument("--rounds", type=int, default=20, help="patches per quiet namespace")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between rounds")
    args = parser.parse_args()
    with ephemeral_control_plane(progress=lambda m: print(m, file=sys.stderr)) as plane:
        asyncio.run(
            run(
                plane.kubeconfig,
                noisy=args.noisy,
                slow=args.slow,
                workers=args.workers,
                cap=args.cap
                or OperatorSettings(max_concurrent_reconciles=args.workers).per_namespace_limit,
                rounds=args.rounds,
                interval=args.interval,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
