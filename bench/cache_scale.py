"""Cache scale: memory and start-up time with 10,000 and 100,000 cached objects.

N Wukong-sized BenchObjects (see `bench_objects`) exist; a peer starts, lists
and watches them (its reconcile does nothing), and the harness reads from
/proc, against controller-runtime (unstructured objects) in the same run:

- time from process start to a synced cache;
- RSS once synced, and bytes per cached object: (RSS with N - RSS of the same
  peer with none) / N;
- peak RSS (VmHWM), which includes the initial list: a client that holds the
  whole list response next to the cache it builds from it peaks at twice.

Each peer syncs both ways a client can: a streaming initial list (WatchList,
`sendInitialEvents`; client-go's WatchListClient gate turned on) and the list a
client makes without it (Wukong: pages of 500; client-go: one list served from
the watch cache).

    .venv/bin/python bench/cache_scale.py [--objects 10000 100000] [--rounds 1]
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_objects import create_objects, install
from compare_peers import controller_runtime_binary
from peer_process import PeerProcess
from results import print_table, write_fragment

from wukong.devcluster import ephemeral_control_plane
from wukong.runtime import Client
from wukong.runtime.resources import NAMESPACES

BENCH = Path(__file__).resolve().parent
PEERS = ("wukong", "controller-runtime")
# How a peer makes its initial list: streamed (WatchList) or listed.
INITIAL_LISTS = ("streamed", "listed")


def _status_kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(field)))


def make_peer(
    name: str, *, kubeconfig: Path, namespace: str, work: Path, initial_list: str
) -> PeerProcess:
    log_file = work / f"{name}-{namespace}-{initial_list}.log"
    streamed = initial_list == "streamed"
    if name == "wukong":
        argv = [
            sys.executable,
            str(BENCH / "peers/wukong_peer.py"),
            f"--kubeconfig={kubeconfig}",
            f"--namespace={namespace}",
            "--bench-objects",
            *([] if streamed else ["--no-watch-list"]),
        ]
        return PeerProcess(name, argv, log_file)
    argv = [
        str(controller_runtime_binary()),
        f"--kubeconfig={kubeconfig}",
        f"--namespace={namespace}",
        "--bench-objects",
    ]
    # client-go reads its feature gates from the environment (off by default in 0.34).
    env = {"KUBE_FEATURE_WatchListClient": "true" if streamed else "false"}
    return PeerProcess(name, argv, log_file, env=env)


async def measure(
    peer_name: str, *, kubeconfig: Path, namespace: str, initial_list: str = "streamed"
) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="wukong-scale-"))
    peer = make_peer(
        peer_name, kubeconfig=kubeconfig, namespace=namespace, work=work, initial_list=initial_list
    )
    started = time.monotonic()
    await peer.start(timeout=900.0, settle=0.0)
    synced = time.monotonic() - started
    await asyncio.sleep(3.0)  # the first reconciles pass; allocations settle
    assert peer.pid is not None
    rss, peak = _status_kib(peer.pid, "VmRSS:"), _status_kib(peer.pid, "VmHWM:")
    await peer.stop()
    return {"sync_s": synced, "rss_kib": rss, "peak_kib": peak}


async def run(kubeconfig: Path, sizes: list[int], rounds: int) -> list[list[str]]:
    rows: list[list[str]] = []
    async with await Client.from_kubeconfig(kubeconfig) as client:
        await install(client)
        await client.create(NAMESPACES, {"metadata": {"name": "scale-empty"}})
        empty = {
            peer: (await measure(peer, kubeconfig=kubeconfig, namespace="scale-empty"))["rss_kib"]
            for peer in PEERS
        }
        print(f"RSS with no objects: {empty} KiB", file=sys.stderr)
        for count in sizes:
            namespace = f"scale-{count}"
            await client.create(NAMESPACES, {"metadata": {"name": namespace}})
            print(f"creating {count} objects in {namespace}...", file=sys.stderr)
            await create_objects(client, namespace, count, concurrency=64)
            for initial_list in INITIAL_LISTS:
                results: dict[str, list[dict[str, float]]] = {peer: [] for peer in PEERS}
                for round_index in range(rounds):
                    order = PEERS if round_index % 2 == 0 else tuple(reversed(PEERS))
                    for peer in order:
                        result = await measure(
                            peer,
                            kubeconfig=kubeconfig,
                            namespace=namespace,
                            initial_list=initial_list,
                        )
                        result["bytes_per_object"] = (
                            (result["rss_kib"] - empty[peer]) * 1024 / count
                        )
                        print(f"  {peer} {count} {initial_list}: {result}", file=sys.stderr)
                        results[peer].append(result)
                rows.extend(_rows(count, initial_list, results))
    return rows


def _rows(
    count: int, initial_list: str, results: dict[str, list[dict[str, float]]]
) -> list[list[str]]:
    def median(peer: str, key: str) -> float:
        return statistics.median(r[key] for r in results[peer])

    rows = []
    for key, label, scale, fmt in (
        ("rss_kib", "RSS once synced (MiB)", 1 / 1024, "{:.1f}"),
        ("bytes_per_object", "bytes per cached object", 1, "{:.0f}"),
        ("peak_kib", "peak RSS, initial list included (MiB)", 1 / 1024, "{:.1f}"),
        ("sync_s", "start to synced cache (s)", 1, "{:.1f}"),
    ):
        ours, theirs = median("wukong", key) * scale, median("controller-runtime", key) * scale
        rows.append(
            [
                f"{label}, {count:,} objects, {initial_list}",
                fmt.format(ours),
                f"{fmt.format(theirs)} (x{ours / theirs:.2f})",
            ]
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="wukong-bench-scale-"))
    with ephemeral_control_plane(
        progress=lambda line: print(line, file=sys.stderr), state_dir=state
    ) as plane:
        rows = asyncio.run(run(plane.kubeconfig, args.objects, args.rounds))
    header = ["measure", "wukong", "controller-runtime (wukong/peer)"]
    print_table(header, rows)
    write_fragment(
        "cache_scale",
        title="Cache scale: Wukong-sized custom objects, listed and watched",
        header=header,
        rows=rows,
        notes=[
            "Each peer its own process on the same local API server; the controller-runtime "
            "peer caches unstructured objects (a custom resource without generated types).",
            "Bytes per object: RSS once synced minus the same peer's RSS with no objects, "
            "divided by N. Peak: VmHWM, which includes the initial list.",
            "streamed: the initial list as a WatchList stream (sendInitialEvents; client-go's "
            "WatchListClient gate on); listed: Wukong's pages of 500, client-go's one list "
            "served from the API server's watch cache.",
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
