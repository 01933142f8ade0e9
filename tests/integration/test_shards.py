"""Sharded managers on an API server with sharded list and watch: every replica works.

Three managers in this process share the namespaces through shard Leases.
Each writes its identity into the ConfigMaps it reconciles; the checks are
what the API server holds and what each replica's informers received: every
ConfigMap is written by the holder of its namespace's shard only, the
server filtered (its `shardInfo` echo) and sent nothing of others' shards,
and when a replica leaves its shards are taken and their objects reconciled
by the others.
"""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from tests import build_progress
from tests.polling import eventually
from wukong.devcluster import ControlPlane, ephemeral_control_plane
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
)
from wukong.runtime._shards import ShardSpace
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
    # Random names, at least one in every shard, so every handoff moves objects.
    space, names = ShardSpace(SHARDS), []
    while len(names) < NAMESPACES_USED:
        name = f"tenant-{uuid.uuid4().hex[:10]}"
        covered = {space.shard_of_key(n) for n in names}
        if space.shard_of_key(name) not in covered or len(covered) == SHARDS:
            names.append(name)
    for name in names:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        await client.create(NAMESPACES, body)
        for i in range(PER_NAMESPACE):
            configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}"}}
            await client.create(CONFIGMAPS, configmap, namespace=name)
    yield names
    for name in names:
        await client.delete(NAMESPACES, name)


def _manager(client: Client, namespace: str, identity: str) -> tuple[Manager, Stamper]:
    manager = Manager(
        client=client,
        options=ManagerOptions(
            leader_election=LeaderElectionConfig(
                name="stamper",
                namespace=namespace,
                identity=identity,
                lease_duration=3,
                renew_deadline=2,
                retry_period=0.5,
            ),
            shards=ShardSpace(SHARDS),
            cancel_on_namespace_deletion=False,
        ),
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
        assert holders["stamper-member-c"] == ""
    finally:
        for manager in managers.values():
            manager.stop()
        for task in tasks.values():
            with contextlib.suppress(Exception):
                await task
        for c in clients:
            await c.close()
