"""`wukong run --shards` replicas scaled 3 -> 5 -> 2 as a Deployment scales them, under load.

Three processes, then five (two start), then two (three get SIGTERM at once, as
a scale-down sends it), while Wukongs are created in every shard throughout and
brought to Running by the simulated infrastructure. After each step the shard
Leases are split fairly among the replicas running and every Wukong created so
far is Running; the SIGTERMed replicas release their shards at once (taken well
within a Lease duration) and exit cleanly. At the end nothing is unreconciled:
every Wukong Running with its spec observed, the survivors' work queues empty.

Who wrote when: each replica logs the moment it took a shard and the moment it
gave it up (`shards +[3] (acquired)`, `shards -[3] (rebalance)`, `(shutdown)`),
and its `wukong_shard_handoffs_total` agrees with its log (read at five replicas,
and of the survivors at the end); no Lease ran out. Those moments make
each shard's holding periods, which never overlap. The API server's audit log
then shows every write in a tenant's namespace landing within its writer's
period for that namespace's shard, or in the handoff window right after it: a
write sent before the writer gave the shard up may land after its log line, but
never once the next holder has taken the shard.
"""

import asyncio
import functools
import itertools
import json
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from tests.contract import check_exposition
from tests.exposition import metric_samples
from tests.integration.test_shards import (
    LEASE_DURATION,
    OPERATOR_SHARDS,
    _agent_of,
    _create_wukongs,
    _operator_writes,
    _scrape,
    _shard_holders,
    _wukong_run,
    control_plane,  # noqa: F401 (the fixture: an API server with sharded list and watch)
    tenants_in_every_shard,
)
from tests.polling import eventually
from wukong.devcluster import ControlPlane
from wukong.devcluster.apis import install_dev_apis
from wukong.devcluster.processes import free_port
from wukong.devcluster.simulator import SimulationConfig, simulator_manager
from wukong.operator.api import WUKONGS
from wukong.runtime import Client, ShardSpace

TENANTS = 10
CREATE_EVERY = 0.25  # seconds: four new Wukongs a second, the tenants in turn
KEEP_ON_SCALE_IN = (1, 3)  # of the five, one of the first three and one that joined
# `shards +[1, 4]-[2] (acquired): holding [1, 4] of 6`, as ShardHolder logs a change.
_CHANGE = re.compile(r"^shards (?:\+\[([\d, ]*)\])?(?:-\[([\d, ]*)\])? \((\w+)\): holding")


@dataclass
class Replica:
    """One `wukong run` process, its log and metrics port."""

    process: "subprocess.Popen[bytes]"
    log: IO[str]
    port: int
    agent: str = ""  # its user agent, wukong/<identity>, once it said it


def _start(plane: ControlPlane, namespace: str, tmp_path: Path, index: int) -> Replica:
    port = free_port()
    # Appending: the test reads the log while the process writes it (a shared offset).
    log = (tmp_path / f"replica-{index}.log").open("a+")
    return Replica(_wukong_run(plane, namespace, log, port), log, port)


@dataclass(frozen=True)
class Change:
    """A change of what a replica holds, when its log says it happened."""

    at: datetime
    gained: frozenset[int]
    lost: frozenset[int]
    reason: str


def _changes(log: IO[str]) -> list[Change]:
    log.seek(0)
    changes = []
    for line in log:
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        match = _CHANGE.match(record["message"])
        if match is None:
            continue
        gained, lost, reason = match.groups()
        changes.append(
            Change(
                at=datetime.fromisoformat(record["time"]),
                gained=frozenset(int(s) for s in (gained or "").split(",") if s.strip()),
                lost=frozenset(int(s) for s in (lost or "").split(",") if s.strip()),
                reason=reason,
            )
        )
    return changes


@dataclass(frozen=True)
class Holding:
    """A replica's hold on one shard, from when it took it to when it gave it up."""

    agent: str
    start: datetime
    end: datetime | None  # None: still held
    ended_by: str = ""


def _holdings(replicas: list[Replica]) -> dict[int, list[Holding]]:
    """Each shard's holding periods, in order, from every replica's log."""
    periods: dict[int, list[Holding]] = {shard: [] for shard in range(OPERATOR_SHARDS)}
    for replica in replicas:
        taken: dict[int, datetime] = {}
        for change in _changes(replica.log):
            for shard in change.gained:
                taken[shard] = change.at
            for shard in change.lost:
                start = taken.pop(shard)
                periods[shard].append(Holding(replica.agent, start, change.at, change.reason))
        for shard, start in taken.items():
            periods[shard].append(Holding(replica.agent, start, None))
    for held in periods.values():
        held.sort(key=lambda h: h.start)
    return periods


def _check_writes(
    plane: ControlPlane, tenants: list[str], periods: dict[int, list[Holding]]
) -> tuple[int, int]:
    """Every operator write in `tenants` landed while its writer held the namespace's
    shard, or in the handoff window after (before the next holder took it). Returns how
    many writes there were, and how many landed in a handoff window."""
    space = ShardSpace(OPERATOR_SHARDS)
    writes = _operator_writes(plane.audit_log, set(tenants))
    in_window = 0
    for write in writes:
        landed = datetime.fromisoformat(write["requestReceivedTimestamp"])
        held = periods[space.shard_of_key(write["objectRef"]["namespace"])]
        for i, holding in enumerate(held):
            if holding.agent != write["userAgent"] or landed < holding.start:
                continue
            if holding.end is None or landed <= holding.end:
                break
            if i + 1 == len(held) or landed < held[i + 1].start:
                in_window += 1
                break
        else:
            raise AssertionError(f"a write outside its writer's hold: {write}\n{held}")
    return len(writes), in_window


def _fair(holders: dict[int, str], agents: set[str]) -> bool:
    """Every shard held, by the replicas in `agents` only, floor or ceil of N/M each."""
    counts = [list(holders.values()).count(agent) for agent in agents]
    floor = OPERATOR_SHARDS // len(agents)
    return (
        len(holders) == OPERATOR_SHARDS
        and set(holders.values()) == agents
        and all(floor <= count <= floor + 1 for count in counts)
    )


async def _keep_creating(
    client: Client, tenants: list[str], created: list[str], stop: asyncio.Event
) -> None:
    """A Wukong every CREATE_EVERY seconds, the tenants in turn, until `stop`; each
    named in `created` as namespace/name once it exists."""
    while not stop.is_set():
        tenant = tenants[len(created) % len(tenants)]
        prefix = f"w{len(created)}"
        await _create_wukongs(client, [tenant], 1, prefix)
        created.append(f"{tenant}/{prefix}-0")
        try:
            await asyncio.wait_for(stop.wait(), CREATE_EVERY)
        except TimeoutError:
            pass


async def _unreconciled(client: Client, tenants: list[str], names: list[str]) -> list[str]:
    """Those of `names` not Running, or whose spec's generation is not yet observed."""
    done = set()
    for tenant in tenants:
        for item in (await client.list(WUKONGS, namespace=tenant))["items"]:
            status = item.get("status") or {}
            if (
                status.get("phase") == "Running"
                and status.get("observedGeneration") == (item["metadata"]["generation"])
            ):
                done.add(f"{tenant}/{item['metadata']['name']}")
    return [name for name in names if name not in done]


async def test_wukong_run_replicas_scale_three_five_two_under_load(
    control_plane: ControlPlane,  # noqa: F811
    client: Client,
    namespace: str,
    tmp_path: Path,
) -> None:
    await install_dev_apis(client)
    tenants = await tenants_in_every_shard(client, "scale", TENANTS)
    simulator = simulator_manager(client=client, config=SimulationConfig())
    simulating = asyncio.create_task(simulator.run())
    created: list[str] = []
    stop_creating = asyncio.Event()
    creating = asyncio.create_task(_keep_creating(client, tenants, created, stop_creating))
    replicas = [_start(control_plane, namespace, tmp_path, i) for i in range(3)]

    async def settle(step: str, running: list[Replica], within: float) -> float:
        """Wait for a fair split among `running` and every Wukong so far Running;
        return how long the split took."""
        started = time.monotonic()
        for replica in running:
            if not replica.agent:
                await eventually(functools.partial(_said_who, replica), what="its identity")
        agents = {r.agent for r in running}
        await eventually(
            lambda: _fair_now(client, namespace, agents),
            what=f"{step}: the shards split fairly among {len(agents)} replicas",
            timeout=within,
        )
        split_in = time.monotonic() - started
        so_far = list(created)
        await eventually(
            lambda: _none_left(client, tenants, so_far),
            what=f"{step}: the {len(so_far)} Wukongs created so far Running",
            timeout=120,
            interval=1.0,
        )
        print(f"{step}: split in {split_in:.1f}s, {len(so_far)} Wukongs Running")
        return split_in

    try:
        await settle("3 replicas", replicas, within=60)

        # Scale out: two more start; the three shed what is above their share.
        replicas += [_start(control_plane, namespace, tmp_path, i) for i in (3, 4)]
        await settle("3 -> 5", replicas, within=60)
        for replica in replicas:  # settled: no handoff under way while each is read
            assert await _metrics_agree_with_log(replica) >= 1, replica.agent

        # Scale in: three get SIGTERM at once and release their shards on the way out.
        leaving = [r for i, r in enumerate(replicas) if i not in KEEP_ON_SCALE_IN]
        staying = [replicas[i] for i in KEEP_ON_SCALE_IN]
        for replica in leaving:
            replica.process.send_signal(signal.SIGTERM)
        split_in = await settle("5 -> 2", staying, within=LEASE_DURATION + 15)
        assert split_in < LEASE_DURATION, "the leavers' shards waited for their Leases to expire"
        for replica in leaving:
            code = await asyncio.to_thread(replica.process.wait, 40)
            assert code == 0, _tail(replica)
            gave_up = [c for c in _changes(replica.log) if c.lost]
            assert gave_up[-1].reason == "shutdown", gave_up

        # The load stops; the last ones created reach Running, nothing is left behind.
        stop_creating.set()
        await creating
        await eventually(
            lambda: _none_left(client, tenants, created),
            what=f"all {len(created)} Wukongs Running and their specs observed",
            timeout=120,
            interval=1.0,
        )
        assert len(created) >= 20, "too little load to mean anything"

        async def queues_drained() -> bool:
            depths = []
            for replica in staying:
                text = await _scrape(f"http://127.0.0.1:{replica.port}/metrics")
                depths += [value for _, value in metric_samples(text, "workqueue_depth")]
            return bool(depths) and not any(depths)

        await eventually(queues_drained, what="the survivors' work queues empty", timeout=30)

        # The survivors' counters agree with their logs, their shares are fair.
        for replica in staying:
            share = await _metrics_agree_with_log(replica)
            assert share == OPERATOR_SHARDS / 2, replica.agent

        # Who wrote when, from the logs' handoffs and the audit log. Every shard given up
        # was handed over on purpose: no Lease ran out under the load.
        periods = _holdings(replicas)
        assert {h.ended_by for held in periods.values() for h in held} <= {
            "",
            "rebalance",
            "shutdown",
        }
        for shard, held in periods.items():
            for before, after in itertools.pairwise(held):
                assert before.end is not None and before.end <= after.start, (shard, held)
            assert held[-1].end is None and held[-1].agent in {r.agent for r in staying}
        moved = sum(len(held) - 1 for held in periods.values())
        assert moved >= OPERATOR_SHARDS, "the scaling moved too few shards"
        writes, in_window = _check_writes(control_plane, tenants, periods)
        assert writes > len(created)
        print(f"{writes} writes by their shard's holder, {in_window} in a handoff window")
    finally:
        stop_creating.set()
        await asyncio.gather(creating, return_exceptions=True)
        for replica in replicas:
            if replica.process.poll() is None:
                replica.process.send_signal(signal.SIGTERM)
        for replica in replicas:
            code = await asyncio.to_thread(replica.process.wait, 40)
            errors = [line for line in _records(replica.log) if line["level"] == "ERROR"]
            assert code == 0, _tail(replica)
            assert not errors, errors[:3]
        simulator.stop()
        await simulating


async def _metrics_agree_with_log(replica: Replica) -> float:
    """Check `replica`'s exposition, its handoff counters against its log's changes, and
    that the API server filtered for it; return how many shards it holds."""
    text = await _scrape(f"http://127.0.0.1:{replica.port}/metrics")
    assert check_exposition(text) == []
    counted = {
        labels["reason"]: value
        for labels, value in metric_samples(text, "wukong_shard_handoffs_total")
    }
    logged: dict[str, float] = {}
    for change in _changes(replica.log):
        logged[change.reason] = logged.get(change.reason, 0) + len(change.gained | change.lost)
    assert {r: v for r, v in counted.items() if v} == logged, replica.agent
    assert not metric_samples(text, "wukong_shard_client_filtering_total")
    ((_, held),) = metric_samples(text, "wukong_shards_held")
    return held


def _said_who(replica: Replica) -> bool:
    try:
        replica.agent = _agent_of(replica.log)
    except AssertionError:
        return False
    return True


async def _fair_now(client: Client, namespace: str, agents: set[str]) -> bool:
    return _fair(await _shard_holders(client, namespace), agents)


async def _none_left(client: Client, tenants: list[str], names: list[str]) -> bool:
    return not await _unreconciled(client, tenants, names)


def _records(log: IO[str]) -> list[dict[str, str]]:
    log.seek(0)
    return [json.loads(line) for line in log if line.startswith("{")]


def _tail(replica: Replica) -> list[dict[str, str]]:
    return _records(replica.log)[-5:]
