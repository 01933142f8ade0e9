"""Sharded managers on an API server with sharded list and watch: every replica works.

Three managers in this process share the namespaces through shard Leases.
Each writes its identity into the ConfigMaps it reconciles; the checks are
what the API server holds and what each replica's informers received: every
ConfigMap is written by the holder of its namespace's shard only, the
server filtered (its `shardInfo` echo) and sent nothing of others' shards,
and when a replica leaves its shards are taken and their objects reconciled
by the others.

Then `wukong run --shards` as users run it: three processes, Wukongs in many
namespaces brought to Running by the simulated infrastructure; the API
server's audit log (every write with its user agent, which names the
replica) shows each namespace written by the holder of its shard only; one
replica is SIGKILLed and its shards move within the Lease duration and a few
seconds, and what was created meanwhile is reconciled by the new holders.
"""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest

from tests import build_progress
from tests.contract import check_exposition
from tests.exposition import metric_samples
from tests.polling import eventually
from wukong.devcluster import ControlPlane, ephemeral_control_plane
from wukong.devcluster.apis import install_dev_apis
from wukong.devcluster.processes import free_port
from wukong.devcluster.simulator import SimulationConfig, simulator_manager
from wukong.metrics import RuntimeMetrics
from wukong.operator.api import WUKONGS
from wukong.runtime import (
    CancelReason,
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
)
from wukong.runtime._errors import NotLeading
from wukong.runtime._shards import ShardHolder
from wukong.runtime.resources import CONFIGMAPS, LEASES, NAMESPACES

SHARDS = 6
NAMESPACES_USED = 8
PER_NAMESPACE = 3
REPLICAS = ("a", "b", "c")


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """An API server of its own, with sharded list and watch on."""
    with ephemeral_control_plane(
        progress=build_progress.progress,
        state_dir=tmp_path_factory.mktemp("sharded-control-plane"),
        feature_gates=("ShardedListAndWatch=true",),
    ) as plane:
        yield plane


class Stamper:
    """Writes this replica's identity into every ConfigMap it reconciles."""

    def __init__(self, identity: str) -> None:
        self.identity = identity
        self.reconciled: set[tuple[str, str]] = set()

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        patch = {"metadata": {"annotations": {"reconciled-by": self.identity}}}
        await ctx.client.patch(CONFIGMAPS, request.name, patch, namespace=request.namespace)
        self.reconciled.add((request.namespace, request.name))
        return Result()


@pytest.fixture
async def tenants(client: Client) -> AsyncIterator[list[str]]:
    # At least one in every shard, so every handoff moves objects.
    names = await tenants_in_every_shard(client, "tenant", NAMESPACES_USED, shards=SHARDS)
    for name in names:
        for i in range(PER_NAMESPACE):
            configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}"}}
            await client.create(CONFIGMAPS, configmap, namespace=name)
    yield names
    for name in names:
        await client.delete(NAMESPACES, name)


def _stamper_options(namespace: str, identity: str, space: ShardSpace | None) -> ManagerOptions:
    """A replica of the group "stamper" on short Lease timings: sharded in `space`,
    or (None) a single leader."""
    return ManagerOptions(
        leader_election=LeaderElectionConfig(
            name="stamper",
            namespace=namespace,
            identity=identity,
            lease_duration=3,
            renew_deadline=2,
            retry_period=0.5,
        ),
        shards=space,
        cancel_on_namespace_deletion=False,
    )


def _manager(client: Client, namespace: str, identity: str) -> tuple[Manager, Stamper]:
    manager = Manager(
        client=client, options=_stamper_options(namespace, identity, ShardSpace(SHARDS))
    )
    stamper = Stamper(identity)
    manager.add(
        Controller(
            name="stamper",
            reconciler=stamper,
            primary=CONFIGMAPS,
            options=ControllerOptions(max_concurrent_reconciles=4),
        )
    )
    return manager, stamper


async def _stop_all(
    managers: Iterable[Manager], tasks: Iterable["asyncio.Task[Any]"], clients: Iterable[Client]
) -> None:
    """Stop the managers, wait for their runs to end, then close the clients."""
    for manager in managers:
        manager.stop()
    for task in tasks:
        with contextlib.suppress(Exception):
            await task
    for c in clients:
        await c.close()


async def _stamps(client: Client, tenants: list[str]) -> dict[tuple[str, str], str | None]:
    stamps: dict[tuple[str, str], str | None] = {}
    for tenant in tenants:
        for item in (await client.list(CONFIGMAPS, namespace=tenant))["items"]:
            annotations = item["metadata"].get("annotations") or {}
            if item["metadata"]["name"].startswith("c"):
                stamps[tenant, item["metadata"]["name"]] = annotations.get("reconciled-by")
    return stamps


async def test_replicas_split_the_shards_and_take_over_a_leaver(
    control_plane: ControlPlane, client: Client, namespace: str, tenants: list[str]
) -> None:
    clients = [await Client.from_kubeconfig(control_plane.kubeconfig) for _ in REPLICAS]
    built = [
        _manager(c, namespace, identity) for c, identity in zip(clients, REPLICAS, strict=True)
    ]
    managers = {identity: m for identity, (m, _) in zip(REPLICAS, built, strict=True)}
    stampers = {identity: s for identity, (_, s) in zip(REPLICAS, built, strict=True)}
    tasks = {i: asyncio.create_task(m.run(), name=f"replica {i}") for i, m in managers.items()}
    try:

        def held(identity: str) -> frozenset[int]:
            shards = managers[identity].shards
            assert shards is not None
            return shards.held

        def fair() -> bool:
            sets = [held(i) for i in REPLICAS]
            return sum(map(len, sets)) == SHARDS and all(len(s) == SHARDS // 3 for s in sets)

        await eventually(fair, what="each replica holding its fair share", timeout=30)
        space = ShardSpace(SHARDS)

        def holder(tenant: str) -> str:
            return next(i for i in REPLICAS if space.shard_of_key(tenant) in held(i))

        async def all_stamped_by_holders() -> bool:
            stamps = await _stamps(client, tenants)
            return len(stamps) == NAMESPACES_USED * PER_NAMESPACE and all(
                by == holder(tenant) for (tenant, _), by in stamps.items()
            )

        await eventually(all_stamped_by_holders, what="every ConfigMap stamped by its holder")
        # Before the split settled a replica may have reconciled more (alone at first, it
        # held every shard): from now on, a change of every ConfigMap reaches its holder only.
        for stamper in stampers.values():
            stamper.reconciled.clear()
        for tenant in tenants:
            for i in range(PER_NAMESPACE):
                patch = {"metadata": {"labels": {"round": "2"}}}
                await client.patch(CONFIGMAPS, f"c{i}", patch, namespace=tenant)
        await eventually(
            lambda: (
                sum(map(len, (s.reconciled for s in stampers.values())))
                >= len(tenants) * PER_NAMESPACE
            ),
            what="every change reconciled",
        )
        for identity in REPLICAS:
            # Only ever its own shards: nothing reconciled elsewhere, nothing foreign received.
            assert all(holder(t) == identity for t, _ in stampers[identity].reconciled)
            informer = managers[identity].informer(CONFIGMAPS)
            assert informer.filtered_by == "server"
            assert informer.foreign_objects == 0
            cached = {obj["metadata"]["namespace"] for obj in informer.store.list_objects()}
            assert all(space.shard_of_key(ns) in held(identity) for ns in cached)

        # "c" leaves: its shards are released at once and taken by "a" and "b".
        left = held("c")
        managers["c"].stop()
        await tasks["c"]
        await eventually(
            lambda: held("a") | held("b") == frozenset(range(SHARDS)),
            what="the leaver's shards taken over",
            timeout=15,
        )
        assert not held("a") & held("b")
        # Taken shards' objects arrive as adds: reconciled by their new holder unasked.
        await eventually(all_stamped_by_holders, what="the moved ConfigMaps stamped anew")
        assert left
        stamps = await _stamps(client, tenants)
        moved = {key: by for key, by in stamps.items() if space.shard_of_key(key[0]) in left}
        assert "c" not in moved.values()
        leases = await client.list(LEASES, namespace=namespace)
        holders = {
            lease["metadata"]["name"]: lease["spec"].get("holderIdentity")
            for lease in leases["items"]
        }
        members = {name: holder for name, holder in holders.items() if "-member-c-" in name}
        assert list(members.values()) == [""]
    finally:
        await _stop_all(managers.values(), tasks.values(), clients)


async def test_scaling_two_to_five_to_two_rebalances_and_restamps(
    control_plane: ControlPlane, client: Client, namespace: str, tenants: list[str]
) -> None:
    """Joins take shards from the others, leaves give them back; after each step
    every ConfigMap is stamped by the current holder of its shard, unasked."""
    space = ShardSpace(SHARDS)
    identities = ("p", "q", "r", "s", "t")
    clients = {i: await Client.from_kubeconfig(control_plane.kubeconfig) for i in identities}
    built = {i: _manager(clients[i], namespace, i) for i in identities}
    tasks: dict[str, asyncio.Task[Any]] = {}

    def held(identity: str) -> frozenset[int]:
        shards = built[identity][0].shards
        assert shards is not None
        return shards.held if identity in tasks and not tasks[identity].done() else frozenset()

    def split_among(members: tuple[str, ...]) -> bool:
        sets = [held(i) for i in members]
        floor = SHARDS // len(members)
        return (
            frozenset().union(*sets) == frozenset(range(SHARDS))
            and sum(map(len, sets)) == SHARDS
            and all(floor <= len(s) <= floor + 1 for s in sets)  # none idle: 2, 1, 1, 1, 1
        )

    async def stamped_by_holders(members: tuple[str, ...]) -> bool:
        owner = {shard: i for i in members for shard in held(i)}
        stamps = await _stamps(client, tenants)
        return all(by == owner.get(space.shard_of_key(t)) for (t, _), by in stamps.items())

    try:
        for step in (identities[:2], identities, identities[:2]):
            for identity in identities:
                running = identity in tasks and not tasks[identity].done()
                if identity in step and not running:
                    if identity in tasks:  # a manager runs once: a fresh one rejoins
                        built[identity] = _manager(clients[identity], namespace, identity)
                    tasks[identity] = asyncio.create_task(built[identity][0].run())
                elif identity not in step and running:
                    built[identity][0].stop()
                    await tasks[identity]
            await eventually(lambda s=step: split_among(s), what=f"shards split among {step}")
            await eventually(
                lambda s=step: stamped_by_holders(s), what=f"stamped by the holders among {step}"
            )
    finally:
        await _stop_all((m for m, _ in built.values()), tasks.values(), clients.values())


class Lingerer:
    """Writes, then stays in flight; cancelled, it tries one more write (it must be refused)."""

    def __init__(self, identity: str) -> None:
        self.identity = identity
        self.cancelled: list[tuple[str, CancelReason | None]] = []
        self.refused: list[str] = []
        self.lingering: list[str] = []  # the namespaces of the reconciles past their write

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        await self._stamp(ctx, request)
        self.lingering.append(request.namespace)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.append((request.namespace, ctx.cancel_reason))
            try:
                await self._stamp(ctx, request)
            except NotLeading:
                self.refused.append(request.namespace)
            raise
        finally:
            self.lingering.remove(request.namespace)
        return Result()

    async def _stamp(self, ctx: ReconcileContext, request: Request) -> None:
        patch = {"metadata": {"annotations": {"reconciled-by": self.identity}}}
        await ctx.client.patch(CONFIGMAPS, request.name, patch, namespace=request.namespace)


async def test_a_shard_handed_over_cancels_its_reconciles_and_refuses_their_writes(
    control_plane: ControlPlane, client: Client, namespace: str, tenants: list[str]
) -> None:
    """ "a" alone holds every shard, a reconcile in flight on every ConfigMap; "b"
    joins and "a" gives half the shards up: exactly the reconciles there are
    cancelled with leader_lost, and their last writes never leave "a"."""
    space = ShardSpace(SHARDS)
    clients = {i: await Client.from_kubeconfig(control_plane.kubeconfig) for i in "ab"}
    lingerers = {i: Lingerer(i) for i in "ab"}
    managers = {}
    for identity in "ab":
        manager, _ = _manager(clients[identity], namespace, identity)
        manager.add(
            Controller(
                name="lingerer",
                reconciler=lingerers[identity],
                primary=CONFIGMAPS,
                # Room for the cluster's own ConfigMaps, which linger as well.
                options=ControllerOptions(max_concurrent_reconciles=200),
            )
        )
        managers[identity] = manager
    in_flight = NAMESPACES_USED * PER_NAMESPACE

    def lingering(identity: str) -> list[str]:
        """The tenants' namespaces of `identity`'s reconciles past their write (the
        cluster's own ConfigMaps, kube-system's say, linger too)."""
        return sorted(ns for ns in lingerers[identity].lingering if ns in tenants)

    tasks = {"a": asyncio.create_task(managers["a"].run())}
    try:
        await eventually(
            lambda: len(lingering("a")) == in_flight, what="a reconcile on every ConfigMap"
        )
        tasks["b"] = asyncio.create_task(managers["b"].run())
        held_a = managers["a"].shards
        assert held_a is not None
        await eventually(lambda: len(held_a.held) == SHARDS // 2, what="a giving half up")
        given = [t for t in tenants if space.shard_of_key(t) not in held_a.held]
        expected = sorted(t for t in given for _ in range(PER_NAMESPACE))
        cancelled = lingerers["a"].cancelled

        def tenants_cancelled() -> list[str]:
            return sorted(ns for ns, _ in cancelled if ns in tenants)

        await eventually(lambda: len(tenants_cancelled()) == len(expected), what="cancellations")
        assert tenants_cancelled() == expected
        assert {reason for _, reason in cancelled} == {CancelReason.LEADER_LOST}
        assert sorted(ns for ns in lingerers["a"].refused if ns in tenants) == expected
        # The rest go on in "a"; "b" took the given ones and works on them.
        assert len(lingering("a")) == in_flight - len(expected)
        await eventually(lambda: lingering("b") == expected, what="b reconciling what it took")
    finally:
        await _stop_all(managers.values(), tasks.values(), clients.values())


class SpaceConflicts(RuntimeMetrics):
    """What a replica told its observers of another live shard space, and its gauge."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []

    def space_conflict(self, conflict: bool) -> None:
        self.seen.append(conflict)
        super().space_conflict(conflict)

    @property
    def gauge(self) -> float | None:
        return self.metrics.registry.get_sample_value("wukong_shard_space_conflict")


def _replica(
    client: Client, namespace: str, identity: str, space: ShardSpace | None
) -> tuple[Manager, Stamper, SpaceConflicts]:
    """A stamping replica of the group "stamper": sharded in `space`, or (None) a
    single leader."""
    conflicts = SpaceConflicts()
    manager = Manager(
        client=client,
        observers=[conflicts],
        options=_stamper_options(namespace, identity, space),
    )
    stamper = Stamper(identity)
    manager.add(Controller(name="stamper", reconciler=stamper, primary=CONFIGMAPS))
    return manager, stamper, conflicts


async def _lease_holders(client: Client, namespace: str) -> dict[str, str]:
    leases = (await client.list(LEASES, namespace=namespace))["items"]
    return {i["metadata"]["name"]: i["spec"].get("holderIdentity") or "" for i in leases}


async def _stop(manager: Manager, task: "asyncio.Task[CancelReason]") -> None:
    manager.stop()
    with contextlib.suppress(Exception):
        await task


async def _stop_replicas(
    replicas: dict[str, tuple[Manager, Stamper, SpaceConflicts]],
    tasks: dict[str, "asyncio.Task[CancelReason]"],
    clients: dict[str, Client],
) -> None:
    """Stop the replicas started (`tasks`, by identity) and close their clients."""
    await _stop_all((replicas[i][0] for i in tasks), tasks.values(), clients.values())


async def test_a_new_shard_count_waits_until_the_old_replicas_are_gone(
    control_plane: ControlPlane, client: Client, namespace: str, tenants: list[str]
) -> None:
    """A rolling update from 12 shards to 16: while replicas of 12 hold their shards,
    the replica of 16 holds none, writes nothing and says why; once they are gone
    it takes all 16 and reconciles everything."""
    old_space, new_space = ShardSpace(12), ShardSpace(16)
    clients = {i: await Client.from_kubeconfig(control_plane.kubeconfig) for i in ("o1", "o2", "n")}
    replicas = {
        "o1": _replica(clients["o1"], namespace, "o1", old_space),
        "o2": _replica(clients["o2"], namespace, "o2", old_space),
        "n": _replica(clients["n"], namespace, "n", new_space),
    }
    tasks = {i: asyncio.create_task(replicas[i][0].run()) for i in ("o1", "o2")}

    def holder(identity: str) -> "ShardHolder":
        shards = replicas[identity][0].shards
        assert shards is not None
        return shards

    try:
        await eventually(
            lambda: len(holder("o1").held) + len(holder("o2").held) == 12,
            what="the old replicas holding all 12 shards",
        )
        tasks["n"] = asyncio.create_task(replicas["n"][0].run())
        await eventually(lambda: holder("n").conflict != "", what="the new replica waiting")
        assert "12 shards by namespace" in holder("n").conflict
        assert "o1" in holder("n").conflict and "o2" in holder("n").conflict
        assert replicas["n"][2].seen[-1] is True
        assert replicas["n"][2].gauge == 1
        assert replicas["n"][2].metrics.registry.get_sample_value("wukong_shards_held") == 0
        # Several rounds and a Lease duration later: still nothing held, nothing written,
        # and the new replica is ready all along (its informers synced).
        await asyncio.sleep(4)
        assert holder("n").held == frozenset()
        assert replicas["n"][0].ready
        assert replicas["n"][1].reconciled == set()
        assert "n" not in (await _stamps(client, tenants)).values()
        holders = await _lease_holders(client, namespace)
        assert [name for name, by in holders.items() if by == "n"] == [
            holder("n")._member.config.name
        ]
        # The old pods go (a rollout stops them one by one): the new one takes all.
        await _stop(replicas["o1"][0], tasks["o1"])
        await asyncio.sleep(1)
        assert holder("n").held == frozenset()  # o2 still holds the old space
        await _stop(replicas["o2"][0], tasks["o2"])
        await eventually(
            lambda: holder("n").held == frozenset(range(16)),
            what="the new replica holding all 16 shards",
            timeout=15,
        )
        assert replicas["n"][2].seen[-1] is False
        assert replicas["n"][2].gauge == 0
        await eventually(
            lambda: _all_stamped_by(client, tenants, "n"),
            what="every ConfigMap reconciled by the new replica",
        )
        leases = (await client.list(LEASES, namespace=namespace))["items"]
        counts = {
            lease["metadata"]["labels"]["shards.wukong.io/count"]
            for lease in leases
            if lease["spec"].get("holderIdentity") == "n"
        }
        assert counts == {"16"}
    finally:
        await _stop_replicas(replicas, tasks, clients)


async def test_two_shard_spaces_starting_together_never_both_work(
    control_plane: ControlPlane, client: Client, namespace: str, tenants: list[str]
) -> None:
    """Replicas of 12 and of 16 shards start at the same moment: whichever wins its
    first shard looks again, so at no time do both hold shards; one space ends up
    with every shard and the other has reconciled nothing."""
    clients = {i: await Client.from_kubeconfig(control_plane.kubeconfig) for i in ("x", "y")}
    replicas = {
        "x": _replica(clients["x"], namespace, "x", ShardSpace(12)),
        "y": _replica(clients["y"], namespace, "y", ShardSpace(16)),
    }
    holders = {i: replicas[i][0].shards for i in replicas}
    tasks = {i: asyncio.create_task(replicas[i][0].run()) for i in replicas}
    both: list[float] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 8
        while loop.time() < deadline:
            held = [h.held for h in holders.values() if h is not None]
            if all(held):
                both.append(loop.time())
            await asyncio.sleep(0.02)
        assert both == []
        counts = {i: len(h.held) for i, h in holders.items() if h is not None}
        winner = max(counts, key=lambda i: counts[i])
        loser = "y" if winner == "x" else "x"
        assert counts == {winner: 12 if winner == "x" else 16, loser: 0}
        assert replicas[loser][1].reconciled == set()
        assert replicas[loser][2].gauge == 1
    finally:
        await _stop_replicas(replicas, tasks, clients)


async def test_a_crashed_old_space_holds_the_new_one_back_for_a_lease_duration(
    control_plane: ControlPlane, client: Client, namespace: str, tenants: list[str]
) -> None:
    """Leases of 12 shards and the single leader's, held by replicas that crashed (never
    renewed, never released): the replica of 16 waits until they expire on its own
    clock, a Lease duration after it first saw them, then takes every shard."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    spec = {"holderIdentity": "ghost", "leaseDurationSeconds": 3, "renewTime": now}
    labels = {
        "shards.wukong.io/group": "stamper",
        "shards.wukong.io/role": "shard",
        "shards.wukong.io/count": "12",
        "shards.wukong.io/by": "namespace",
    }
    for name, lease_labels in [
        *((f"stamper-shard-{i}", labels) for i in range(12)),
        ("stamper", {}),
    ]:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "labels": lease_labels},
            "spec": spec,
        }
        await client.create(LEASES, body, namespace=namespace)
    new_client = await Client.from_kubeconfig(control_plane.kubeconfig)
    manager, stamper, conflicts = _replica(new_client, namespace, "n", ShardSpace(16))
    holder = manager.shards
    assert holder is not None
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.create_task(manager.run())
    try:
        await eventually(lambda: holder.conflict != "", what="the new replica waiting")
        assert "ghost" in holder.conflict and "unsharded" in holder.conflict
        await eventually(lambda: bool(holder.held), what="a first shard taken", timeout=15)
        assert loop.time() - started >= 3  # not before the Leases' duration ran out
        await eventually(
            lambda: holder.held == frozenset(range(16)), what="every shard taken", timeout=15
        )
        assert conflicts.gauge == 0
        await eventually(
            lambda: _all_stamped_by(client, tenants, "n"), what="everything reconciled"
        )
        assert stamper.reconciled
    finally:
        await _stop(manager, task)
        await new_client.close()


async def _all_stamped_by(client: Client, tenants: list[str], identity: str) -> bool:
    stamps = await _stamps(client, tenants)
    return len(stamps) == NAMESPACES_USED * PER_NAMESPACE and set(stamps.values()) == {identity}


async def _change_every_configmap(client: Client, tenants: list[str], *, after: str) -> None:
    """A change of every tenant's ConfigMaps (a label `after`), for their new
    reconciler to stamp."""
    patch = {"metadata": {"labels": {"after": after}}}
    for i in range(PER_NAMESPACE):
        for tenant in tenants:
            await client.patch(CONFIGMAPS, f"c{i}", patch, namespace=tenant)


async def test_a_sharded_replica_waits_for_a_live_single_leader(
    control_plane: ControlPlane, client: Client, namespace: str, tenants: list[str]
) -> None:
    """Sharding turned on: while the single leader of the group lives, the sharded
    replica takes no shard; once it is gone, it takes them all."""
    clients = {i: await Client.from_kubeconfig(control_plane.kubeconfig) for i in ("solo", "s")}
    solo = _replica(clients["solo"], namespace, "solo", None)
    sharded = _replica(clients["s"], namespace, "s", ShardSpace(SHARDS))
    tasks = {"solo": asyncio.create_task(solo[0].run())}
    holder = sharded[0].shards
    assert holder is not None and solo[0].elector is not None
    try:
        await eventually(lambda: _all_stamped_by(client, tenants, "solo"), what="solo leading")
        tasks["s"] = asyncio.create_task(sharded[0].run())
        await eventually(lambda: holder.conflict != "", what="the sharded replica waiting")
        assert "unsharded held by solo" in holder.conflict
        await asyncio.sleep(4)
        assert holder.held == frozenset()
        assert sharded[1].reconciled == set()
        assert solo[0].elector.is_leader
        await _stop(solo[0], tasks["solo"])
        await eventually(
            lambda: holder.held == frozenset(range(SHARDS)), what="all shards taken", timeout=15
        )
        await _change_every_configmap(client, tenants, after="solo")
        await eventually(lambda: _all_stamped_by(client, tenants, "s"), what="s reconciling")
    finally:
        await _stop_replicas({"solo": solo, "s": sharded}, tasks, clients)


async def test_a_single_leader_waits_for_live_sharded_replicas(
    control_plane: ControlPlane, client: Client, namespace: str, tenants: list[str]
) -> None:
    """Sharding turned off: while a sharded replica of the group holds shards, the
    single leader does not lead (it wins its Lease, looks, and gives it back); once
    the sharded replica is gone, it leads and reconciles everything."""
    clients = {i: await Client.from_kubeconfig(control_plane.kubeconfig) for i in ("solo", "s")}
    solo = _replica(clients["solo"], namespace, "solo", None)
    sharded = _replica(clients["s"], namespace, "s", ShardSpace(SHARDS))
    holder = sharded[0].shards
    assert holder is not None and solo[0].elector is not None
    tasks = {"s": asyncio.create_task(sharded[0].run())}
    try:
        await eventually(lambda: _all_stamped_by(client, tenants, "s"), what="s working")
        tasks["solo"] = asyncio.create_task(solo[0].run())
        await eventually(lambda: True in solo[2].seen, what="the single leader seeing shards")
        await asyncio.sleep(4)
        assert not solo[0].elector.is_leader
        assert solo[1].reconciled == set()
        assert (await _lease_holders(client, namespace)).get("stamper", "") == ""
        assert holder.held == frozenset(range(SHARDS))
        await _stop(sharded[0], tasks["s"])
        await eventually(lambda: solo[0].elector.is_leader, what="solo leading", timeout=15)
        assert solo[2].seen[-1] is False
        await _change_every_configmap(client, tenants, after="shards")
        await eventually(lambda: _all_stamped_by(client, tenants, "solo"), what="solo working")
    finally:
        await _stop_replicas({"solo": solo, "s": sharded}, tasks, clients)


OPERATOR_SHARDS = 6
TENANTS = 10


async def tenants_in_every_shard(
    client: Client, prefix: str, count: int, *, shards: int = OPERATOR_SHARDS
) -> list[str]:
    """`count` new namespaces named `prefix-...`, at least one in each of `shards`
    shards, the operator's by default (so every replica has work)."""
    space = ShardSpace(shards)
    tenants: list[str] = []
    while len(tenants) < count:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        covered = {space.shard_of_key(t) for t in tenants}
        if space.shard_of_key(name) not in covered or len(covered) == shards:
            tenants.append(name)
    for tenant in tenants:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": tenant}}
        await client.create(NAMESPACES, body)
    return tenants


# 1,000 Wukongs before the kill (WUKONG_SHARDED_FLEET=200 for a quicker look).
WUKONGS_PER_TENANT = int(os.environ.get("WUKONG_SHARDED_FLEET", "1000")) // TENANTS
LATE_PER_TENANT = 2  # created right after it
LEASE_DURATION = 15.0  # `wukong run`'s


def _wukong_run(
    control_plane: ControlPlane, lease_namespace: str, log: IO[str], metrics_port: int
) -> "subprocess.Popen[bytes]":
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wukong.cli",
            "--log-format=json",
            "--log-level=info",
            "run",
            f"--kubeconfig={control_plane.kubeconfig}",
            f"--leader-election-namespace={lease_namespace}",
            f"--shards={OPERATOR_SHARDS}",
            "--shard-by=namespace",
            f"--metrics-bind=127.0.0.1:{metrics_port}",
            "--no-metrics-secure",
            "--health-bind=0",
            "--webhook-bind=0",
            "--max-concurrent-reconciles=8",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def _shard_holders(client: Client, namespace: str) -> dict[int, str]:
    """Shard: the user agent of the replica holding it (its identity)."""
    holders: dict[int, str] = {}
    for lease in (await client.list(LEASES, namespace=namespace))["items"]:
        name = lease["metadata"]["name"]
        holder = lease["spec"].get("holderIdentity")
        if name.startswith("wukong-operator-shard-") and holder:
            holders[int(name.rsplit("-", 1)[1])] = f"wukong/{holder}"
    return holders


def _operator_writes(audit_log: Path, tenants: set[str]) -> list[dict[str, Any]]:
    """The sharded replicas' writes in `tenants` (their user agents start with wukong/)."""
    writes = []
    for line in audit_log.read_text().splitlines():
        event = json.loads(line)
        namespace = (event.get("objectRef") or {}).get("namespace")
        if namespace in tenants and event.get("userAgent", "").startswith("wukong/"):
            writes.append(event)
    return writes


async def _all_running(client: Client, tenants: list[str], expected: int) -> bool:
    running = 0
    for tenant in tenants:
        for item in (await client.list(WUKONGS, namespace=tenant))["items"]:
            running += (item.get("status") or {}).get("phase") == "Running"
    return running == expected


async def _create_wukongs(client: Client, tenants: list[str], count: int, prefix: str) -> None:
    for tenant in tenants:
        for i in range(count):
            body = {
                "apiVersion": WUKONGS.api_version,
                "kind": WUKONGS.kind,
                "metadata": {"name": f"{prefix}-{i}", "namespace": tenant},
                "spec": {"disks": [{"name": "root", "size": "1Gi"}]},
            }
            await client.create(WUKONGS, body, namespace=tenant)


async def test_wukong_run_replicas_share_the_wukongs_and_survive_a_sigkill(
    control_plane: ControlPlane, client: Client, namespace: str, tmp_path: Path
) -> None:
    await install_dev_apis(client)
    space = ShardSpace(OPERATOR_SHARDS)
    tenants = await tenants_in_every_shard(client, "fleet", TENANTS)
    simulator = simulator_manager(client=client, config=SimulationConfig())
    simulating = asyncio.create_task(simulator.run())
    ports = [free_port() for _ in range(3)]
    logs = [(tmp_path / f"replica-{i}.log").open("w+") for i in range(3)]
    processes = [_wukong_run(control_plane, namespace, logs[i], ports[i]) for i in range(3)]
    try:

        async def balanced() -> bool:
            holders = await _shard_holders(client, namespace)
            per_replica = [list(holders.values()).count(h) for h in set(holders.values())]
            return len(holders) == OPERATOR_SHARDS and sorted(per_replica) == [2, 2, 2]

        await eventually(balanced, what="three replicas holding two shards each", timeout=60)
        holders = await _shard_holders(client, namespace)

        started = time.monotonic()
        await _create_wukongs(client, tenants, WUKONGS_PER_TENANT, "vm")
        total = TENANTS * WUKONGS_PER_TENANT
        await eventually(
            lambda: _all_running(client, tenants, total),
            what=f"{total} Wukongs Running",
            timeout=240 * total / 200,
            interval=1.0,
        )
        print(f"{total} Wukongs Running in {time.monotonic() - started:.1f}s")

        # Each namespace written by one replica only: the holder of its shard.
        writers: dict[str, set[str]] = {}
        for write in _operator_writes(control_plane.audit_log, set(tenants)):
            writers.setdefault(write["objectRef"]["namespace"], set()).add(write["userAgent"])
        assert set(writers) == set(tenants)
        for tenant, agents in writers.items():
            assert agents == {holders[space.shard_of_key(tenant)]}, (tenant, agents)

        # Each replica's metrics: two shards held, acquired once each, filtered by the server.
        for port in ports:
            text = await _scrape(f"http://127.0.0.1:{port}/metrics")
            assert check_exposition(text) == []
            assert metric_samples(text, "wukong_shards_held") == [({}, 2.0)]
            handoffs = dict(
                (labels["reason"], value)
                for labels, value in metric_samples(text, "wukong_shard_handoffs_total")
            )
            assert handoffs.get("acquired", 0) >= 2
            assert not metric_samples(text, "wukong_shard_client_filtering_total")

        # SIGKILL one replica: nothing released, its Leases must expire.
        victim = processes[0]
        victim_agent = _agent_of(logs[0])
        victim_shards = {shard for shard, agent in holders.items() if agent == victim_agent}
        assert len(victim_shards) == 2
        victim.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        victim.wait(10)
        await _create_wukongs(client, tenants, LATE_PER_TENANT, "late")

        async def taken_over() -> bool:
            now = await _shard_holders(client, namespace)
            return len(now) == OPERATOR_SHARDS and victim_agent not in now.values()

        await eventually(
            taken_over, what="the killed replica's shards taken", timeout=LEASE_DURATION + 15
        )
        moved_in = time.monotonic() - killed_at
        print(f"shards moved {moved_in:.1f}s after the SIGKILL")
        assert moved_in < LEASE_DURATION + 10
        late = TENANTS * LATE_PER_TENANT
        await eventually(
            lambda: _all_running(client, tenants, total + late),
            what="the Wukongs created after the kill Running",
            timeout=60,
            interval=1.0,
        )
        after = await _shard_holders(client, namespace)
        for write in _operator_writes(control_plane.audit_log, set(tenants)):
            name = write["objectRef"].get("name") or ""
            if write["objectRef"]["resource"] == "wukongs" and name.startswith("late-"):
                tenant = write["objectRef"]["namespace"]
                assert write["userAgent"] == after[space.shard_of_key(tenant)], write
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, log in zip(processes, logs, strict=True):
            code = await asyncio.to_thread(process.wait, 30)
            log.seek(0)
            lines = [json.loads(line) for line in log if line.startswith("{")]
            errors = [line for line in lines if line["level"] == "ERROR"]
            assert code in (0, -signal.SIGKILL), lines[-5:]
            assert not errors, errors[:3]
        simulator.stop()
        await simulating


def _agent_of(log: IO[str]) -> str:
    log.seek(0)
    for line in log:
        if line.startswith("{") and "active-active as" in line:
            message = json.loads(line)["message"]
            return "wukong/" + message.split("active-active as ", 1)[1].split(":", 1)[0]
    raise AssertionError("the replica did not say who it is")


async def _scrape(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return await response.text()
