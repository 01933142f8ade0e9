"""Wukong's runtime against kopf and controller-runtime, on one local API server.

Three peers do the same no-op work on the same kind of objects, each as its
own process (see `peer_process`): Wukong's runtime, a kopf operator
(`@kopf.on.event`) and a Go controller-runtime controller (built here from the
Go module proxy). Per peer, alternating order, `--rounds` times:

1. event -> reconcile latency (p50/p99) and throughput for N ConfigMaps created
   while the peer runs (latency = reconcile start - create sent);
2. memory per cached object: RSS after all N were reconciled minus RSS before
   any existed, divided by N;

and, for the two peers with RequeueAfter (kopf has none):

3. requeue lateness: K objects each asking for RequeueAfter 1 s, under that
   load; lateness = interval between an object's reconciles - 1 s, and the
   amplification = mean interval / 1 s - 1. `--requeue-rounds` repeats it,
   alternating which peer goes first. Seven rounds by default: a round's p99
   is the 24th worst of 2,400 intervals, and keys come due in one burst a
   second, so one pause of either process in one burst sets it; a round's
   ratio moves by x2 and more from one round to the next, and three rounds
   left the median to one or two of them.

Every cell is a median (min-max) over rounds; a ratio is taken within each
round (both peers measured minutes apart at most), then summarised the same way.

    .venv/bin/python bench/compare_peers.py [--objects 1000] [--rounds 4] [--requeue-objects 200]
        [--requeue-rounds 7] [--requeue-only]

`--requeue-only` runs part 3 alone and prints its rows without writing the
table's fragment (the table needs every part from one run).
"""

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from peer_process import PeerProcess, cpu_seconds
from results import percentile, spread, versus, write_fragment

from wukong.devcluster import binaries, ephemeral_control_plane
from wukong.runtime import Client
from wukong.runtime.resources import CONFIGMAPS, NAMESPACES

BENCH = Path(__file__).resolve().parent
PEERS = ("wukong", "kopf", "controller-runtime")
REQUEUE_PEERS = ("wukong", "controller-runtime")  # kopf has no RequeueAfter
WORKERS = 4
PAYLOAD = "x" * 512  # each ConfigMap carries 512 bytes of data


def controller_runtime_binary() -> Path:
    return binaries.go_program(
        BENCH / "peers/controller-runtime",
        name="bench-controller-runtime-peer",
        progress=lambda line: print(line, file=sys.stderr),
    )


def make_peer(
    name: str, *, kubeconfig: Path, namespace: str, work_dir: Path, requeue_after: float = 0.0
) -> PeerProcess:
    log_file = work_dir / f"{name}-{namespace}.log"
    if name == "wukong":
        argv = [
            sys.executable,
            str(BENCH / "peers/wukong_peer.py"),
            f"--kubeconfig={kubeconfig}",
            f"--namespace={namespace}",
            f"--workers={WORKERS}",
            f"--requeue-after={requeue_after}",
        ]
        return PeerProcess(name, argv, log_file)
    if name == "kopf":
        argv = [
            sys.executable,
            "-m",
            "kopf",
            "run",
            "--standalone",
            f"--namespace={namespace}",
            str(BENCH / "peers/kopf_peer.py"),
        ]
        return PeerProcess(name, argv, log_file, env={"KUBECONFIG": str(kubeconfig)})
    argv = [
        str(controller_runtime_binary()),
        f"--kubeconfig={kubeconfig}",
        f"--namespace={namespace}",
        f"--workers={WORKERS}",
        f"--requeue-after={requeue_after}s",
    ]
    return PeerProcess(name, argv, log_file)


async def create_objects(
    client: Client, namespace: str, count: int, *, concurrency: int = 16
) -> dict[str, float]:
    """Create `count` ConfigMaps; when each create was sent (unix seconds)."""
    sent: dict[str, float] = {}
    limit = asyncio.Semaphore(concurrency)

    async def create(index: int) -> None:
        name = f"obj-{index:05d}"
        body = {"metadata": {"name": name, "namespace": namespace}, "data": {"payload": PAYLOAD}}
        async with limit:
            sent[name] = time.time()
            await client.create(CONFIGMAPS, body)

    await asyncio.gather(*(create(index) for index in range(count)))
    return sent


async def measure_events(
    client: Client, peer_name: str, *, kubeconfig: Path, namespace: str, objects: int, work: Path
) -> dict[str, float]:
    await client.create(NAMESPACES, {"metadata": {"name": namespace}})
    peer = make_peer(peer_name, kubeconfig=kubeconfig, namespace=namespace, work_dir=work)
    await peer.start()
    try:
        rss_before = peer.rss_bytes()
        sent = await create_objects(client, namespace, objects)
        await peer.wait_first(set(sent))
        await asyncio.sleep(2.0)  # let allocations settle before reading RSS
        rss_after = peer.rss_bytes()
    finally:
        await peer.stop()
    latencies = [(peer.first[name] - sent[name]) * 1000 for name in sent]
    span = max(peer.first.values()) - min(sent.values())
    return {
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "objects_per_s": objects / span,
        "bytes_per_object": (rss_after - rss_before) / objects,
        "rss_mib": rss_after / 2**20,
    }


async def measure_requeue(
    client: Client, peer_name: str, *, kubeconfig: Path, namespace: str, objects: int, work: Path
) -> dict[str, float]:
    await client.create(NAMESPACES, {"metadata": {"name": namespace}})
    await create_objects(client, namespace, objects)
    peer = make_peer(
        peer_name, kubeconfig=kubeconfig, namespace=namespace, work_dir=work, requeue_after=1.0
    )
    await peer.start()
    assert peer.pid is not None
    cpu_at_start = cpu_seconds(peer.pid)
    await asyncio.sleep(12.0)
    cpu = cpu_seconds(peer.pid) - cpu_at_start
    await peer.stop()
    times: defaultdict[str, list[float]] = defaultdict(list)
    for name, at in peer.reconciles:
        times[name].append(at)
    intervals = [b - a for series in times.values() for a, b in itertools.pairwise(series)]
    lateness = [(interval - 1.0) * 1000 for interval in intervals]
    return {
        "reconciles_per_s": len(peer.reconciles) / 12.0,
        # The peer's whole process over the run (it does nothing else): the tail
        # of a burst of keys due together follows how long each one takes.
        "cpu_us_per_reconcile": cpu / len(peer.reconciles) * 1e6,
        "lateness_p50_ms": percentile(lateness, 0.5),
        "lateness_p99_ms": percentile(lateness, 0.99),
        "amplification_pct": (statistics.fmean(intervals) - 1.0) * 100,
    }


async def run(
    kubeconfig: Path,
    *,
    objects: int,
    rounds: int,
    requeue_objects: int,
    requeue_rounds: int,
    requeue_only: bool = False,
) -> None:
    work = Path(tempfile.mkdtemp(prefix="wukong-peers-"))
    controller_runtime_binary()  # build before timing anything
    events: defaultdict[str, list[dict[str, float]]] = defaultdict(list)
    requeue: defaultdict[str, list[dict[str, float]]] = defaultdict(list)
    async with await Client.from_kubeconfig(kubeconfig) as client:
        for round_index in range(0 if requeue_only else rounds):
            order = PEERS if round_index % 2 == 0 else tuple(reversed(PEERS))
            for peer in order:
                namespace = f"events-{peer}-{round_index}"
                print(f"round {round_index + 1}/{rounds}: {peer}", file=sys.stderr)
                events[peer].append(
                    await measure_events(
                        client,
                        peer,
                        kubeconfig=kubeconfig,
                        namespace=namespace,
                        objects=objects,
                        work=work,
                    )
                )
        for round_index in range(requeue_rounds):
            order = REQUEUE_PEERS if round_index % 2 == 0 else tuple(reversed(REQUEUE_PEERS))
            for peer in order:
                print(
                    f"requeue lateness {round_index + 1}/{requeue_rounds}: {peer}", file=sys.stderr
                )
                requeue[peer].append(
                    await measure_requeue(
                        client,
                        peer,
                        kubeconfig=kubeconfig,
                        namespace=f"requeue-{peer}-{round_index}",
                        objects=requeue_objects,
                        work=work,
                    )
                )
    report(
        events,
        requeue,
        objects=objects,
        rounds=rounds,
        requeue_objects=requeue_objects,
        requeue_rounds=requeue_rounds,
        write=not requeue_only,
    )


def report(
    events: dict[str, list[dict[str, float]]],
    requeue: dict[str, list[dict[str, float]]],
    *,
    objects: int,
    rounds: int,
    requeue_objects: int,
    requeue_rounds: int,
    write: bool = True,
) -> None:
    def row(samples: dict[str, list[dict[str, float]]], title: str, key: str, digits: int) -> None:
        """wukong's median (min-max), then each peer's median and wukong/peer per round."""
        fmt = f"{{:.{digits}f}}"
        ours = [sample[key] for sample in samples["wukong"]]
        cells = [title, spread(ours, fmt)]
        for peer in ("kopf", "controller-runtime"):
            if peer not in samples:
                cells.append("n/a (no RequeueAfter)")
                continue
            cells.append(versus(ours, [sample[key] for sample in samples[peer]], fmt))
        rows.append(cells)
        print(f"  {title:<34} " + "   ".join(cells[1:]))

    rows: list[list[str]] = []
    if events:
        print(f"objects: {objects}, rounds: {rounds}; cells: median (min-max) over rounds")
        row(events, "event->reconcile p50 (ms)", "p50_ms", 1)
        row(events, "event->reconcile p99 (ms)", "p99_ms", 1)
        row(events, "throughput (objects/s)", "objects_per_s", 0)
        row(events, "memory per cached object (bytes)", "bytes_per_object", 0)
        row(events, "RSS after N objects (MiB)", "rss_mib", 1)
    print(f"requeue: {requeue_objects} objects, {requeue_rounds} rounds")
    row(requeue, "requeue lateness p50 (ms)", "lateness_p50_ms", 2)
    row(requeue, "requeue lateness p99 (ms)", "lateness_p99_ms", 2)
    row(requeue, "RequeueAfter amplification (%)", "amplification_pct", 2)
    row(requeue, "reconciles/s at 1 s requeue", "reconciles_per_s", 1)
    row(requeue, "CPU per requeued reconcile (us)", "cpu_us_per_reconcile", 0)
    if not write:
        return
    write_fragment(
        "compare_peers",
        title=f"Against kopf and controller-runtime ({objects} ConfigMaps, {WORKERS} workers)",
        header=["measure", "wukong", "kopf (wukong/kopf)", "controller-runtime (wukong/peer)"],
        rows=rows,
        notes=[
            f"{rounds} rounds, peers alternating order, each peer its own process on the same "
            "local API server; latency = reconcile start - create sent. Cells: median "
            "(min-max) over rounds; a ratio is taken within each round, then the same.",
            "kopf reacts with @kopf.on.event (no state written back, unbounded concurrency); "
            "it keeps no object cache and has no RequeueAfter.",
            f"Requeue: {requeue_objects} objects each returning RequeueAfter 1 s for 12 s, "
            f"{requeue_rounds} rounds.",
        ],
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requeue-objects", type=int, default=200)
    parser.add_argument("--requeue-rounds", type=int, default=7)
    parser.add_argument(
        "--requeue-only", action="store_true", help="only the requeue rounds; no fragment written"
    )
    args = parser.parse_args()
    with ephemeral_control_plane(progress=lambda m: print(m, file=sys.stderr)) as plane:
        asyncio.run(
            run(
                plane.kubeconfig,
                objects=args.objects,
                rounds=args.rounds,
                requeue_objects=args.requeue_objects,
                requeue_rounds=args.requeue_rounds,
                requeue_only=args.requeue_only,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
