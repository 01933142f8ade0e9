"""Sharding: what each active-active replica costs and what the replicas do together.

1, 2 and 4 replicas share 12 shards (ranges of the hash of the namespace)
of Wukong objects (the operator's CRD, Wukong-sized specs) spread evenly over
many namespaces; each replica is its own process, the runtime's `Manager`
with `shards=ShardSpace(12)` and `wukong run`'s Lease timings, reconciling
Wukongs with the capacity bench's work (read from the cache, one status
patch). The harness reads, in the same run:

- RSS of each replica once it is synced with its share, and the same process
  with no object, so the part the objects take shows;
- bytes received from the API server by each replica until then, counted by
  a TCP proxy on loopback in front of the API server, one per replica;
- the time from process start to that point, and from when it was told to
  take shards (its interpreter up, its member Lease held) to there;
- both ways a replica filters: by the API server (`shardSelector`, feature
  gate ShardedListAndWatch on) and on its own side, the fallback it takes
  when the API server ignores the selector (the same API server restarted
  with the gate off, on the same etcd);
- total reconciles/s at saturation: every replica reconciles every object it
  holds, each writing one status patch (a requeue storm), with the API
  server's and etcd's CPU beside it;
- handoff: one replica SIGKILLed, the time until its shards are held by
  the others and an object created in them is reconciled.

    .venv/bin/python bench/sharding.py [--objects 10000 100000] [--storm-objects 10000]
        [--replicas 1 2 4] [--budget SECONDS] [--name sharding]

Sizes that cannot be created and measured within `--budget` are skipped and
said so; on a loaded 2-core machine, run the largest alone, without the storm:
`--objects 100000 --storm-objects --name sharding_100k`.

`--replica` runs one replica (the harness starts them). It logs to its file in
the work directory (shards taken, lists started, what it holds and caches, timed)
and answers `memory <path>` on its stdin, for a look by hand at what its memory
is made of (the harness never sends it): a tracemalloc snapshot to `path` when
started with PYTHONTRACEMALLOC, the allocator's arenas to its log, its RSS before
and after glibc's malloc_trim.
"""

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from peer_process import cpu_seconds
from results import print_table, write_fragment

from wukong.devcluster import ControlPlane, ephemeral_control_plane
from wukong.devcluster.crds import install_crds
from wukong.operator.api import WUKONGS
from wukong.operator.crd import operator_crds
from wukong.runtime import (
    Client,
    Controller,
    ControllerOptions,
    LeaderElectionConfig,
    Manager,
    ManagerOptions,
    ReconcileContext,
    Request,
    Result,
    ShardSpace,
    Store,
)
from wukong.runtime.resources import LEASES, NAMESPACES

SHARDS = 12  # divides evenly among 1, 2, 3, 4 and 6 replicas
SPACE = ShardSpace(SHARDS)
GATE = "ShardedListAndWatch=true"
LEASE_NAMESPACE = "default"


# -- one replica (its own process) ---------------------------------------------------------


def _emit(event: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({"event": event, "t": time.time(), **fields}) + "\n")
    sys.stdout.flush()


class Stamper:
    """Writes the storm's tag into each Wukong's status once: one status patch a
    reconcile, nothing while no storm was asked for or once the tag is there."""

    def __init__(self, cache: Store) -> None:
        self.cache = cache
        self.tag: str | None = None
        self.expected = 0
        self.written = 0

    def storm(self, tag: str, count: int) -> None:
        self.tag, self.expected, self.written = tag, count, 0

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        obj = self.cache.get_by_name(request.namespace, request.name)
        if obj is None or self.tag is None:
            return Result()
        if (obj.get("status") or {}).get("nodeName") == self.tag:
            return Result()
        status = {"nodeName": self.tag, "observedGeneration": obj["metadata"]["generation"]}
        await ctx.client.patch_status(
            WUKONGS, request.name, {"status": status}, namespace=request.namespace
        )
        self.written += 1
        if self.written == self.expected:
            _emit("stormed", tag=self.tag, count=self.written)
        return Result()


def _memory(path: str) -> None:
    """What the memory of this replica is made of, for a look by hand: a tracemalloc
    snapshot (when started with PYTHONTRACEMALLOC) to `path`, the allocator's arenas
    to stderr (the replica's log), and the RSS before and after glibc's malloc_trim
    (which the informer already did once its list was synced)."""
    import ctypes
    import gc
    import tracemalloc

    gc.collect()
    if tracemalloc.is_tracing():
        tracemalloc.take_snapshot().dump(path)
    sys._debugmallocstats()
    before = _status_kib(os.getpid(), "VmRSS:")
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    _emit("memory", rss_kib=before, trimmed_kib=_status_kib(os.getpid(), "VmRSS:"))


async def _stdin_lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def replica(args: argparse.Namespace) -> None:
    # Its log (the harness keeps it in the work directory): shards taken and lists, timed.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s.%(msecs)03d %(name)s %(message)s", datefmt="%X"
    )
    logging.getLogger("wukong.runtime.informer").setLevel(logging.DEBUG)  # when lists start
    async with await Client.from_kubeconfig(args.kubeconfig) as client:
        manager = Manager(
            client=client,
            options=ManagerOptions(
                leader_election=LeaderElectionConfig(
                    name=args.group, namespace=LEASE_NAMESPACE, identity=args.identity
                ),
                shards=SPACE,
                block_warning_seconds=None,
            ),
        )
        informer = manager.informer(WUKONGS)
        stamper = Stamper(informer.store)
        manager.add(
            Controller(
                name="bench",
                reconciler=stamper,
                primary=WUKONGS,
                options=ControllerOptions(max_concurrent_reconciles=args.workers),
            )
        )
        manager.handle_signals()
        holder = manager.shards
        assert holder is not None
        # Replicas started together (a Deployment's pods) each see the others' member
        # Lease in their first round and take their share only: without this, the first
        # to get there would take every shard for a round and list them all.
        await holder._member.acquire()
        commands = await _stdin_lines()
        _emit("member")
        await commands.readline()  # "go"
        running = asyncio.create_task(manager.run())

        async def report() -> None:
            last: tuple[object, ...] = ()
            while True:
                state = (
                    sorted(holder.held),
                    informer.synced.is_set(),
                    len(informer.store),
                    informer.filtered_by,
                    informer.foreign_objects,
                )
                if state != last:
                    held, synced, cached, filtered_by, foreign = state
                    logging.getLogger("bench").info("holding %s, synced %s, %d cached", *state[:3])
                    _emit(
                        "state",
                        held=held,
                        synced=synced,
                        cached=cached,
                        filtered_by=filtered_by,
                        foreign=foreign,
                    )
                    last = state
                await asyncio.sleep(0.1)

        async def obey() -> None:
            while line := (await commands.readline()).decode().split():
                if line[0] == "memory":
                    _memory(line[1])
                elif line[0] == "storm":
                    objects = informer.store.list_objects()
                    stamper.storm(line[1], len(objects))
                    for obj in objects:
                        metadata = obj["metadata"]
                        manager.enqueue("bench", Request(metadata["namespace"], metadata["name"]))

        helpers = [asyncio.create_task(report()), asyncio.create_task(obey())]
        try:
            await running
        finally:
            for task in helpers:
                task.cancel()


# -- the harness -----------------------------------------------------------------------------


class ByteCounter:
    """A TCP proxy on loopback in front of the API server (TLS passes through), counting
    the bytes the API server sends back."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.received = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        listen_port: int = self._server.sockets[0].getsockname()[1]
        return listen_port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return

        async def pump(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, count: bool
        ) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while chunk := await source.read(1 << 18):
                    if count:
                        self.received += len(chunk)
                    sink.write(chunk)
                    await sink.drain()
            sink.close()

        try:
            await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))
        finally:
            self._tasks.discard(task)


def _status_kib(pid: int, field_name: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith(field_name))
    return int(line.split()[1])


@dataclass
class Replica:
    """One replica process, its proxy, and what it last said of itself."""

    identity: str
    process: asyncio.subprocess.Process
    proxy: ByteCounter
    started: float
    went: float = (
        0.0  # when it was told to take shards (its interpreter started, its member Lease held)
    )
    state: dict[str, Any] = field(default_factory=dict)
    state_at: float = 0.0
    stormed_at: dict[str, float] = field(default_factory=dict)
    member: asyncio.Event = field(default_factory=asyncio.Event)
    memory: dict[str, Any] = field(default_factory=dict)
    reader: "asyncio.Task[None] | None" = None

    async def read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            message = json.loads(line)
            if message["event"] == "member":
                self.member.set()
            elif message["event"] == "state":
                self.state, self.state_at = message, time.monotonic()
            elif message["event"] == "memory":
                self.memory = message
            elif message["event"] == "stormed":
                self.stormed_at[message["tag"]] = time.monotonic()

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")

    @property
    def held(self) -> set[int]:
        return set(self.state.get("held", ()))


@dataclass
class Layout:
    """The namespaces, an equal number in every shard, and how many objects each holds."""

    namespaces: list[str]  # interleaved: shard 0, 1, ..., 11, 0, 1, ...
    per_namespace: dict[str, int]

    @classmethod
    def make(cls, count: int) -> "Layout":
        per_shard = max(1, count // SHARDS)
        buckets: list[list[str]] = [[] for _ in range(SHARDS)]
        while any(len(bucket) < per_shard for bucket in buckets):
            name = f"tenant-{uuid.uuid4().hex[:10]}"
            bucket = buckets[SPACE.shard_of_key(name)]
            if len(bucket) < per_shard:
                bucket.append(name)
        namespaces = [buckets[s][i] for i in range(per_shard) for s in range(SHARDS)]
        return cls(namespaces=namespaces, per_namespace=dict.fromkeys(namespaces, 0))

    def objects_in(self, shards: set[int]) -> int:
        return sum(n for ns, n in self.per_namespace.items() if SPACE.shard_of_key(ns) in shards)

    @property
    def total(self) -> int:
        return sum(self.per_namespace.values())


def _wukong(namespace: str, name: str) -> dict[str, Any]:
    """A Wukong with two networks and three disks (the BenchObject's shape)."""
    return {
        "apiVersion": WUKONGS.api_version,
        "kind": WUKONGS.kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "cpu": 2,
            "memory": "2Gi",
            "networks": [
                {"name": "data", "config": '{"cniVersion": "0.3.1", "type": "bridge"}'},
                {"name": "storage", "nadName": "shared-storage"},
            ],
            "disks": [
                {"name": "root", "size": "10Gi", "image": "docker://quay.io/containerdisks/f:40"},
                {"name": "data", "size": "20Gi", "storageClassName": "standard"},
                {"name": "scratch", "size": "5Gi", "storageClassName": "local-wait"},
            ],
        },
    }


async def create_wukongs(client: Client, layout: Layout, total: int, concurrency: int) -> float:
    """Objects up to `total` in all, round-robin over the namespaces (so every shard
    gets the same number, give or take one); how many were created a second."""
    start = layout.total
    limit = asyncio.Semaphore(concurrency)
    started = time.monotonic()

    async def create(index: int) -> None:
        namespace = layout.namespaces[index % len(layout.namespaces)]
        async with limit:
            await client.create(WUKONGS, _wukong(namespace, f"wk-{index:06d}"), namespace=namespace)
        layout.per_namespace[namespace] += 1

    await asyncio.gather(*(create(index) for index in range(start, total)))
    elapsed = time.monotonic() - started
    print(
        f"created {total - start} Wukongs in {elapsed:.0f}s ({(total - start) / elapsed:.0f}/s)",
        file=sys.stderr,
    )
    return (total - start) / elapsed


def _proxied_kubeconfig(kubeconfig: Path, port: int, path: Path) -> Path:
    config = yaml.safe_load(kubeconfig.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path.write_text(yaml.safe_dump(config))
    return path


def _server_pids(plane: ControlPlane) -> list[int]:
    return [c.pid for c in plane.status().components if c.pid is not None]


def _machine_busy() -> float:
    """CPU seconds the whole machine has been busy (every process, this harness and
    others' work included), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _cores(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


@dataclass
class Bench:
    plane: ControlPlane
    work: Path
    workers: int
    phase: int = 0
    tag: str = ""  # the last storm's: what a reconcile writes until the next one

    async def start(self, count: int) -> list[Replica]:
        """`count` replicas of a new Lease group, started together, each behind its proxy."""
        self.phase += 1
        group = f"bench-{self.phase}"
        server = self.plane.config
        replicas = []
        for index in range(count):
            proxy = ByteCounter(server.host, server.apiserver_port)
            port = await proxy.start()
            identity = f"{group}-r{index}"
            kubeconfig = _proxied_kubeconfig(
                self.plane.kubeconfig, port, self.work / f"{identity}.kubeconfig"
            )
            log = (self.work / f"{identity}.log").open("wb")
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--replica",
                f"--kubeconfig={kubeconfig}",
                f"--identity={identity}",
                f"--group={group}",
                f"--workers={self.workers}",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
            log.close()
            one = Replica(identity, process, proxy, time.monotonic())
            one.reader = asyncio.create_task(one.read())
            replicas.append(one)
        await asyncio.wait_for(asyncio.gather(*(r.member.wait() for r in replicas)), 120)
        for one in replicas:
            one.send("go")
            one.went = time.monotonic()
        return replicas

    async def settled(
        self, replicas: list[Replica], layout: Layout, filtered_by: set[str], timeout: float
    ) -> dict[str, float]:
        """Wait until the shards are split evenly and every replica has synced exactly the
        objects of its own; then each one's time to there (the latest), RSS, bytes."""
        share = SHARDS // len(replicas)
        deadline = time.monotonic() + timeout
        done_at: dict[str, float] = {}
        taking: dict[str, float] = {}
        while len(done_at) < len(replicas):
            if time.monotonic() > deadline:
                seen = {r.identity: r.state for r in replicas}
                raise RuntimeError(f"replicas not settled after {timeout:.0f}s: {seen}")
            for one in replicas:
                if one.process.returncode is not None:
                    raise RuntimeError(f"{one.identity} exited; see {self.work}")
                state = one.state
                ready = (
                    state.get("synced")
                    and len(one.held) == share
                    and state.get("cached") == layout.objects_in(one.held)
                    # Holding every shard, a replica has nothing to filter out.
                    and (state.get("filtered_by") in filtered_by or share == SHARDS)
                )
                if ready and one.identity not in done_at:
                    done_at[one.identity] = one.state_at - one.started
                    taking[one.identity] = one.state_at - one.went
                elif not ready:
                    done_at.pop(one.identity, None)
            await asyncio.sleep(0.1)
        held = [r.held for r in replicas]
        assert set().union(*held) == set(range(SHARDS)), held
        await asyncio.sleep(3.0)  # the first reconciles (no writes: no storm yet) pass
        rss = [_status_kib(r.process.pid, "VmRSS:") / 1024 for r in replicas]
        received = [r.proxy.received / 2**20 for r in replicas]
        states = [dict(r.state) for r in replicas]
        print(f"  settled: rss {rss} MiB, received {received} MiB, {states}", file=sys.stderr)
        return {
            "sync_s": max(done_at.values()),
            "taking_s": max(taking.values()),
            "rss_mib": statistics.median(rss),
            "rss_max_mib": max(rss),
            "received_mib": statistics.median(received),
            "received_max_mib": max(received),
            "foreign": sum(s.get("foreign", 0) for s in states),
        }

    async def storm(self, replicas: list[Replica], layout: Layout) -> dict[str, float]:
        """Every replica reconciles every object it holds, one status patch each."""
        tag = f"storm-{self.phase}-{random.randrange(10**6)}"
        servers = _server_pids(self.plane)
        pids = [r.process.pid for r in replicas]
        cpu_servers, cpu_replicas, busy = _cores(servers), _cores(pids), _machine_busy()
        started = time.monotonic()
        for one in replicas:
            one.send(f"storm {tag}")
        deadline = started + 900
        while not all(tag in r.stormed_at for r in replicas):
            if time.monotonic() > deadline:
                raise RuntimeError("storm not done after 900 s")
            await asyncio.sleep(0.05)
        elapsed = max(r.stormed_at[tag] for r in replicas) - started
        servers_s = _cores(servers) - cpu_servers
        replicas_s = _cores(pids) - cpu_replicas
        machine_s = _machine_busy() - busy
        total = layout.total
        result = {
            "per_s": total / elapsed,
            "server_cores": servers_s / elapsed,
            "replica_cores": replicas_s / elapsed,
            "machine_cores": machine_s / elapsed,
            "server_us": servers_s / total * 1e6,
            "replica_us": replicas_s / total * 1e6,
        }
        print(f"  storm of {total}: {result}", file=sys.stderr)
        self.tag = tag
        return result

    async def handoff(
        self, client: Client, replicas: list[Replica], layout: Layout
    ) -> dict[str, float]:
        """SIGKILL the first replica; create an object in a namespace of each of its
        shards; time until its shards are held by others and those objects reconciled."""
        victim = replicas[0]
        shards = sorted(victim.held)
        group = victim.identity.rsplit("-", 1)[0]
        killed_at = time.monotonic()
        victim.process.send_signal(signal.SIGKILL)
        late = []
        for shard in shards:
            namespace = next(ns for ns in layout.namespaces if SPACE.shard_of_key(ns) == shard)
            name = f"late-{self.phase}-{shard}"
            await client.create(WUKONGS, _wukong(namespace, name), namespace=namespace)
            late.append((namespace, name))
        held_at = reconciled_at = 0.0
        names = {f"{group}-shard-{shard}" for shard in shards}
        while not reconciled_at:
            if time.monotonic() - killed_at > 120:
                raise RuntimeError("the killed replica's shards were not taken in 120 s")
            if not held_at:
                leases = (await client.list(LEASES, namespace=LEASE_NAMESPACE))["items"]
                holders = [
                    (lease.get("spec") or {}).get("holderIdentity")
                    for lease in leases
                    if lease["metadata"]["name"] in names
                ]
                if len(holders) == len(names) and all(h and h != victim.identity for h in holders):
                    held_at = time.monotonic()
            else:
                stamped = [
                    ((await client.get(WUKONGS, name, namespace=ns)).get("status") or {}).get(
                        "nodeName"
                    )
                    == self.tag
                    for ns, name in late
                ]
                if all(stamped):
                    reconciled_at = time.monotonic()
            await asyncio.sleep(0.2)
        for ns, _ in late:
            layout.per_namespace[ns] += 1
        result = {"held_s": held_at - killed_at, "reconciled_s": reconciled_at - killed_at}
        print(f"  handoff of shards {shards}: {result}", file=sys.stderr)
        return result

    async def stop(self, replicas: list[Replica]) -> None:
        for one in replicas:
            if one.process.returncode is None:
                one.process.send_signal(signal.SIGTERM)
        for one in replicas:
            try:
                await asyncio.wait_for(one.process.wait(), 30)
            except TimeoutError:
                one.process.kill()
                await one.process.wait()
            if one.reader is not None:
                one.reader.cancel()
            await one.proxy.close()


Results = dict[tuple[str, int, int], dict[str, float]]


async def _client(plane: ControlPlane) -> Client:
    return await Client.from_kubeconfig(plane.kubeconfig)


async def _restart(plane: ControlPlane, gates: tuple[str, ...]) -> None:
    """The API server again, on the same etcd, with `gates` (the sharded list on or off)."""
    plane.config = dataclasses.replace(plane.config, feature_gates=gates)
    await asyncio.to_thread(
        plane.restart_apiserver, progress=lambda line: print(line, file=sys.stderr)
    )


@dataclass
class Measured:
    settled: Results = field(default_factory=dict)  # (mode, size, replicas): figures
    storms: Results = field(default_factory=dict)
    handoffs: Results = field(default_factory=dict)
    empty_rss: float = 0.0
    empty_received: float = 0.0
    skipped: list[str] = field(default_factory=list)  # past --budget


async def run(plane: ControlPlane, args: argparse.Namespace) -> Measured:
    bench = Bench(plane, Path(tempfile.mkdtemp(prefix="wukong-sharding-")), args.workers)
    print(f"replica logs in {bench.work}", file=sys.stderr)
    measured = Measured()
    settled, storms, handoffs = measured.settled, measured.storms, measured.handoffs
    layout = Layout.make(args.namespaces)
    started = time.monotonic()
    create_rate = 1.0
    client = await _client(plane)
    try:
        await install_crds(client, operator_crds())
        for namespace in layout.namespaces:
            await client.create(NAMESPACES, {"metadata": {"name": namespace}})
        # The same process with no object: the part the objects take is the rest.
        replicas = await bench.start(1)
        empty = await bench.settled(replicas, layout, {"server", "unconfirmed"}, 120)
        measured.empty_rss = empty["rss_mib"]
        measured.empty_received = empty["received_mib"]
        await bench.stop(replicas)
        # Each size both ways, the objects only ever added: the mode the last size ended
        # with first, so the API server restarts (the gate on or off) once per size.
        plan: list[tuple[str, int]] = []
        gate_on = True
        for size in sorted(args.objects):
            modes = ("server", "client") if gate_on else ("client", "server")
            plan += [(mode, size) for mode in modes]
            gate_on = modes[-1] == "server"
        gate_on = True
        for mode, size in plan:
            if time.monotonic() - started > args.budget:
                measured.skipped.append(f"{mode}-side at {size:,} objects")
                continue
            if (mode == "server") != gate_on:
                await client.close()
                gate_on = mode == "server"
                await _restart(plane, (GATE,) if gate_on else ())
                client = await _client(plane)
            if layout.total < size:
                # Its objects not created in half the budget left (at the last size's pace): skip.
                left = args.budget - (time.monotonic() - started)
                if layout.total and (size - layout.total) / create_rate > left / 2:
                    measured.skipped.append(
                        f"{size:,} objects (creating them at {create_rate:.0f}/s would take "
                        f"{(size - layout.total) / create_rate:.0f} s)"
                    )
                    break
                print(f"creating Wukongs up to {size}...", file=sys.stderr)
                create_rate = await create_wukongs(client, layout, size, args.concurrency)
            expected = {"server", "unconfirmed"} if mode == "server" else {"client"}
            # Every replica count's memory first, on the same objects: a storm writes
            # every object's status (larger objects to list) and a handoff adds some.
            for count in args.replicas:
                print(f"{mode}-side, {layout.total} objects, {count} replicas", file=sys.stderr)
                replicas = await bench.start(count)
                try:
                    settled[mode, size, count] = await bench.settled(
                        replicas, layout, expected, args.timeout
                    )
                finally:
                    await bench.stop(replicas)
            stormed = mode == "server" and size in args.storm_objects
            for count in args.replicas if stormed else ():
                print(f"storm, {layout.total} objects, {count} replicas", file=sys.stderr)
                replicas = await bench.start(count)
                try:
                    await bench.settled(replicas, layout, expected, args.timeout)
                    storms[mode, size, count] = await bench.storm(replicas, layout)
                    if count > 1:
                        handoffs[mode, size, count] = await bench.handoff(client, replicas, layout)
                finally:
                    await bench.stop(replicas)
    finally:
        await client.close()
    return measured


def _goal(ratio: float, count: int) -> str:
    return "met" if ratio <= 1 / count + 0.10 else "not met"


def rows_of(args: argparse.Namespace, measured: Measured) -> list[list[str]]:
    counts = args.replicas
    settled, storms, handoffs = measured.settled, measured.storms, measured.handoffs
    empty_rss, empty_received = measured.empty_rss, measured.empty_received
    rows: list[list[str]] = []

    def row(
        label: str,
        results: Results,
        key: tuple[str, int],
        value: Callable[[dict[str, float]], float],
        fmt: str,
        goal: bool = False,
    ) -> None:
        cells = [label]
        goals = []
        base = results.get((*key, counts[0]))
        for count in counts:
            result = results.get((*key, count))
            if result is None:
                cells.append("-")
                continue
            text = fmt.format(value(result))
            if base is not None and count != counts[0] and value(base):
                ratio = value(result) / value(base)
                text += f" (x{ratio:.2f})"
                if goal:
                    goals.append(f"{count}: {_goal(ratio, count)}")
            cells.append(text)
        cells.append(", ".join(goals) if goals else "")
        rows.append(cells)

    sizes = sorted(args.objects)
    for mode, where in (("server", "filtered by the API server"), ("client", "filtered here")):
        for size in sizes:
            key = (mode, size)
            what = f"{size:,} objects, {where}"
            row(f"RSS per replica once synced (MiB), {what}", settled, key, _rss, "{:.1f}")
            row(
                f"RSS above the empty process (MiB), {what}",
                settled,
                key,
                lambda r: r["rss_mib"] - empty_rss,
                "{:.1f}",
                goal=mode == "server",
            )
            row(
                f"received from the API server per replica (MiB), {what}",
                settled,
                key,
                lambda r: r["received_mib"],
                "{:.2f}",
            )
            row(
                f"received above the empty process (MiB), {what}",
                settled,
                key,
                lambda r: r["received_mib"] - empty_received,
                "{:.2f}",
                goal=mode == "server",
            )
            row(
                f"start to synced with its shards (s), {what}",
                settled,
                key,
                lambda r: r["sync_s"],
                "{:.1f}",
            )
            row(
                f"of which from taking shards to synced (s), {what}",
                settled,
                key,
                lambda r: r["taking_s"],
                "{:.1f}",
            )
    for size in sorted(args.storm_objects):
        key = ("server", size)
        what = f"{size:,} objects"
        row(f"reconciles/s, all replicas, {what}", storms, key, lambda r: r["per_s"], "{:.0f}")
        row(
            f"API server + etcd CPU meanwhile (cores), {what}",
            storms,
            key,
            lambda r: r["server_cores"],
            "{:.2f}",
        )
        row(
            f"replicas' CPU meanwhile (cores), {what}",
            storms,
            key,
            lambda r: r["replica_cores"],
            "{:.2f}",
        )
        row(
            f"whole machine busy meanwhile (cores of {os.cpu_count()}), {what}",
            storms,
            key,
            lambda r: r["machine_cores"],
            "{:.2f}",
        )
        row(
            f"API server + etcd CPU per reconcile (us), {what}",
            storms,
            key,
            lambda r: r["server_us"],
            "{:.0f}",
        )
        row(
            f"replica CPU per reconcile (us), {what}",
            storms,
            key,
            lambda r: r["replica_us"],
            "{:.0f}",
        )
        row(
            f"SIGKILL to its shards held by others (s), {what}",
            handoffs,
            key,
            lambda r: r["held_s"],
            "{:.1f}",
        )
        row(
            f"SIGKILL to an object created there reconciled (s), {what}",
            handoffs,
            key,
            lambda r: r["reconciled_s"],
            "{:.1f}",
        )
    return rows


def _rss(result: dict[str, float]) -> float:
    return result["rss_mib"]


def projection(storms: Results, cores: int) -> list[str]:
    """Capacity with an API server and etcd on `cores` cores of their own, from the
    measured CPU per reconcile, and where this machine's curve stops."""
    if not storms:
        return []
    key = min(storms, key=lambda k: k[2])
    one = storms[key]
    server_us = statistics.median(r["server_us"] for r in storms.values())
    replica_us = one["replica_us"]
    per_replica = 1e6 / replica_us
    lines = [
        f"Projection: a replica is one Python process, at most one core: "
        f"1e6 / {replica_us:.0f} us = {per_replica:.0f} reconciles/s each; the API server "
        f"and etcd take {server_us:.0f} us of CPU per reconcile (median over the storms), "
        f"so C cores of their own serve C x 1e6 / {server_us:.0f} = "
        f"C x {1e6 / server_us:.0f} reconciles/s. Capacity(N, C) = min(N x {per_replica:.0f}, "
        f"C x {1e6 / server_us:.0f})."
    ]
    for c in (2, 4, 8):
        curve = ", ".join(
            f"N={n}: {min(n * per_replica, c * 1e6 / server_us):.0f}/s" for n in (1, 2, 4, 8)
        )
        knee = c * replica_us / server_us
        lines.append(f"With C={c}: {curve} (replicas stop adding past N = {knee:.1f}).")
    for size in sorted({k[1] for k in storms}):
        measured = sorted((k[2], r) for k, r in storms.items() if k[1] == size)
        rates = ", ".join(f"N={n}: {r['per_s']:.0f}/s" for n, r in measured)
        busy = ", ".join(f"{r['machine_cores']:.2f}" for _, r in measured)
        flat = next(
            (
                n
                for (_, before), (n, r) in itertools.pairwise(measured)
                if r["per_s"] < 1.1 * before["per_s"]
            ),
            None,
        )
        where = (
            f"replicas stopped adding at N = {flat}"
            if flat is not None
            else "capacity grew with every replica count measured"
        )
        lines.append(
            f"Here, {size:,} objects: {rates}; the whole machine busy {busy} of {cores} "
            f"cores meanwhile (replicas, API server and etcd share them): {where}."
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument(
        "--storm-objects",
        type=int,
        nargs="*",
        default=[10000],
        help="the sizes (of --objects) to run the storm and the handoff at",
    )
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--namespaces", type=int, default=1200)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent creates")
    parser.add_argument("--timeout", type=float, default=600.0, help="to settle, per step")
    parser.add_argument(
        "--budget",
        type=float,
        default=1080.0,
        help="seconds after which no further size or mode is started (reported as not run)",
    )
    parser.add_argument(
        "--name",
        default="sharding",
        help="the fragment's name in bench/.results (a second run at other sizes keeps both)",
    )
    parser.add_argument("--replica", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", help=argparse.SUPPRESS)
    parser.add_argument("--identity", help=argparse.SUPPRESS)
    parser.add_argument("--group", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replica:
        asyncio.run(replica(args))
        return 0
    started = time.monotonic()
    state = Path(tempfile.mkdtemp(prefix="wukong-bench-sharding-"))
    with ephemeral_control_plane(
        progress=lambda line: print(line, file=sys.stderr), state_dir=state, feature_gates=(GATE,)
    ) as plane:
        load_before = Path("/proc/loadavg").read_text().split()[:3]
        measured = asyncio.run(run(plane, args))
        load_after = Path("/proc/loadavg").read_text().split()[:3]
    rows = rows_of(args, measured)
    storms_run = bool(measured.storms)
    header = [
        "measure",
        *(f"{n} replica{'s' if n > 1 else ''}" for n in args.replicas),
        "goal: x <= 1/N + 0.10",
    ]
    print_table(header, rows)
    notes = [
        f"{SHARDS} shards by namespace; {args.namespaces} namespaces, an equal number in every "
        "shard, the objects round-robin over them (so the split is even: skew is another "
        "matter, see README's Scale out). Each replica its own process: the runtime's Manager "
        f"with shards, `wukong run`'s Lease timings (15 s, 10 s, 2 s), {args.workers} workers, "
        "reconciling the operator's Wukong CRD with the capacity bench's work (read the cache, "
        "one status patch), not the operator's reconciler (which would build VMs).",
        f"RSS: median over the replicas once each holds {SHARDS}/N shards and has synced "
        f"exactly their objects; the empty process: {measured.empty_rss:.1f} MiB, "
        f"{measured.empty_received:.2f} MiB received (Leases, and the Namespaces, listed "
        "whole by every replica: cluster-scoped, not sharded). Received: bytes the "
        "API server sent each replica (TLS included) from its start to then, through a "
        "loopback proxy per replica, as they travel (the API server gzips large lists, the "
        "client asks for it). In brackets: against 1 replica. Goals: the parts above the "
        "empty process, filtered by the API server, at most 1/N + 0.10 of 1 replica's.",
        "Start to synced: from the replicas' spawn (N interpreters starting at once on the "
        "shared cores) to the last one synced; of which from taking shards: from the order "
        "to take them (every replica up, its member Lease held) to then.",
        "Filtered here: the same API server restarted without ShardedListAndWatch on the "
        "same etcd: it ignores the shardSelector, each replica sees an object of a shard it "
        "did not ask for, falls back to listing and watching everything and keeps its own.",
        "Storm: every replica reconciles every object it holds, one status patch each; "
        "reconciles/s from the order to the last replica done; CPU from /proc over that span.",
        "Handoff: the first replica SIGKILLed, then one Wukong created in a namespace of each "
        "of its shards; its Leases expire after 15 s (nothing released).",
        *projection(measured.storms, os.cpu_count() or 1),
        f"Command: `{' '.join(['.venv/bin/python', 'bench/sharding.py', *sys.argv[1:]])}`. "
        f"Whole run: {time.monotonic() - started:.0f} s; load average (1, 5, 15 min) "
        f"{' '.join(load_before)} before, {' '.join(load_after)} after (the machine is shared).",
        *(
            [f"Not run (past --budget {args.budget:.0f} s): {', '.join(measured.skipped)}."]
            if measured.skipped
            else []
        ),
    ]
    for note in notes:
        print(note)
    sizes = " and ".join(f"{size:,}" for size in sorted(args.objects))
    replicas = ", ".join(map(str, args.replicas))
    measures = "memory, bytes and sync" + (", capacity and handoff" if storms_run else "")
    write_fragment(
        args.name,
        title=f"Sharding: {measures} per replica count ({replicas} replicas; {sizes} objects)",
        header=header,
        rows=rows,
        notes=notes,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
