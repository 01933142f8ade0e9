"""The shard space: the API server's hash, ranges, selectors and the client-side filter."""

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from wukong.metrics import RuntimeMetrics
from wukong.runtime import (
    ApiError,
    Informer,
    Object,
    ReconcileContext,
    Request,
    Resource,
    RuntimeObserver,
)
from wukong.runtime._client import WatchEvent
from wukong.runtime._fence import WriteFence
from wukong.runtime._shards import ShardFilter, ShardSpace, ShardSpans, _dns_label, fnv1a64
from wukong.runtime.observe import LifecycleEvent, Step
from wukong.runtime.resources import CONFIGMAPS


def test_fnv1a64_matches_the_reference_vectors() -> None:
    # From the FNV reference test suite (64-bit FNV-1a).
    assert fnv1a64("") == 0xCBF29CE484222325
    assert fnv1a64("a") == 0xAF63DC4C8601EC8C
    assert fnv1a64("foobar") == 0x85944171F73967E8


def test_shards_cover_the_hash_space_without_gaps() -> None:
    space = ShardSpace(3)
    bounds = [space.bounds(shard) for shard in range(3)]
    assert bounds[0][0] == 0
    assert bounds[-1][1] == 1 << 64
    assert all(bounds[i][1] == bounds[i + 1][0] for i in range(2))
    for key in ("default", "tenant-a", "kube-system", "x" * 63):
        low, high = space.bounds(space.shard_of_key(key))
        assert low <= fnv1a64(key) < high


def test_selector_merges_adjacent_ranges_and_ors_the_rest() -> None:
    space = ShardSpace(4)
    assert space.selector([0, 1]) == (
        "shardRange(object.metadata.namespace, '0x0000000000000000', '0x8000000000000000')"
    )
    assert space.selector([3, 0]) == (
        "shardRange(object.metadata.namespace, '0x0000000000000000', '0x4000000000000000')"
        " || shardRange(object.metadata.namespace, '0xc000000000000000', '0x10000000000000000')"
    )
    assert ShardSpace(1, "uid").selector([0]) == (
        "shardRange(object.metadata.uid, '0x0000000000000000', '0x10000000000000000')"
    )


def test_filter_keeps_the_held_shards_and_every_cluster_scoped_object() -> None:
    shards = ShardFilter(ShardSpace(8))
    namespaces = [f"ns-{hashlib.sha1(bytes([i])).hexdigest()[:10]}" for i in range(40)]
    assert shards.selector is None
    shards.held = frozenset({1, 5})
    kept = [ns for ns in namespaces if shards.accepts({"metadata": {"namespace": ns}})]
    assert kept == [ns for ns in namespaces if ShardSpace(8).shard_of_key(ns) in {1, 5}]
    assert 0 < len(kept) < len(namespaces)
    assert shards.accepts({"metadata": {"name": "a-storage-class"}})


def test_fence_refuses_writes_to_shards_not_held() -> None:
    held = {"mine"}
    fence = WriteFence(shards=lambda ns: None if ns in held or ns is None else f"lease-of-{ns}")
    assert fence.refuses("mine") is None
    assert fence.refuses(None) is None
    assert fence.refuses("theirs") == "lease-of-theirs"
    fence.close("leader")
    assert fence.refuses("mine") == "leader"


def test_a_space_needs_a_shard() -> None:
    with pytest.raises(ValueError):
        ShardSpace(0)


def test_names_that_differ_only_at_the_end_crowd_into_few_shards() -> None:
    """Why sharding by namespace skews: FNV-1a mixes a string's last bytes into its
    low bits only, and the shards are ranges of the high bits."""
    space = ShardSpace(8)
    by_suffix = Counter(space.shard_of_key(f"tenant-{i}") for i in range(200))
    by_uid = Counter(
        space.shard_of_key(str(uuid.uuid5(uuid.NAMESPACE_OID, str(i)))) for i in range(2000)
    )
    assert len(by_suffix) <= 3
    assert len(by_uid) == 8


def test_metrics_count_shards_held_and_handoffs_by_reason() -> None:
    metrics = RuntimeMetrics()
    registry = metrics.metrics.registry
    assert registry.get_sample_value("wukong_shards_held") == 0
    metrics.shards_changed(frozenset({0, 1, 2}), 3, "acquired")
    metrics.shards_changed(frozenset({0, 1}), 1, "rebalance")
    metrics.shard_filtering("configmaps", "client")
    assert registry.get_sample_value("wukong_shards_held") == 2
    handoffs = "wukong_shard_handoffs_total"
    assert registry.get_sample_value(handoffs, {"reason": "acquired"}) == 3
    assert registry.get_sample_value(handoffs, {"reason": "rebalance"}) == 1
    filtering = "wukong_shard_client_filtering_total"
    assert registry.get_sample_value(filtering, {"resource": "configmaps"}) == 1


class _Server:
    """A fake API server's list and watch of ConfigMaps in four namespaces, one per shard."""

    def __init__(self, *, refuses: bool = False, echoes: bool = False) -> None:
        space = ShardSpace(4)
        names: dict[int, str] = {}
        for i in range(1000):
            name = f"ns-{hashlib.sha1(str(i).encode()).hexdigest()[:8]}"
            names.setdefault(space.shard_of_key(name), name)
        self.objects = [
            {"metadata": {"name": "c", "namespace": ns, "resourceVersion": "1", "uid": ns}}
            for ns in names.values()
        ]
        self.refuses, self.echoes = refuses, echoes
        self.selectors: list[str | None] = []

    async def list(self, resource: Resource, **kwargs: Any) -> Object:
        selector = kwargs.get("shard_selector")
        self.selectors.append(selector)
        if selector and self.refuses:
            raise ApiError(status=400, reason="BadRequest", message="no", verb="list", path="/")
        metadata: dict[str, Any] = {"resourceVersion": "1"}
        if selector and self.echoes:
            metadata["shardInfo"] = {"selector": selector}
        return {"items": self.objects, "metadata": metadata}

    async def watch(self, resource: Resource, **kwargs: Any) -> AsyncIterator[WatchEvent]:
        self.selectors.append(kwargs.get("shard_selector"))
        await asyncio.Event().wait()
        yield WatchEvent("BOOKMARK", {})  # never reached


class _Filtering(RuntimeObserver):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def shard_filtering(self, resource: str, where: str) -> None:
        self.seen.append((resource, where))


async def _informer_on(server: _Server) -> tuple[Informer, _Filtering]:
    shards = ShardFilter(ShardSpace(4))
    shards.held = frozenset({1, 2})
    observer = _Filtering()
    informer = Informer(
        client=server,  # type: ignore[arg-type]
        resource=CONFIGMAPS,
        shards=shards,
        observer=observer,
    )
    task = asyncio.create_task(informer.run())
    await asyncio.wait_for(informer.synced.wait(), 5)
    await asyncio.sleep(0.05)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    held = {obj["metadata"]["namespace"] for obj in informer.store.list_objects()}
    assert {shards.shard_of_key(ns) for ns in held} == {1, 2}
    return informer, observer


async def test_a_server_that_echoes_the_selector_filters() -> None:
    server = _Server(echoes=True)
    shards = ShardFilter(ShardSpace(4))
    server.objects = [o for o in server.objects if shards.shard_of(o) in {1, 2}]
    informer, observer = await _informer_on(server)
    assert informer.filtered_by == "server"
    assert informer.foreign_objects == 0 and not observer.seen


async def test_a_server_that_ignores_the_selector_is_filtered_on_this_side() -> None:
    informer, observer = await _informer_on(_Server())
    assert informer.filtered_by == "client"
    assert informer.foreign_objects == 2
    assert observer.seen == [("configmaps", "client")]


async def test_a_server_that_refuses_the_selector_is_asked_without_it() -> None:
    server = _Server(refuses=True)
    informer, observer = await _informer_on(server)
    assert informer.filtered_by == "client"
    assert server.selectors[0] is not None and server.selectors[1:] == [None, None]
    assert observer.seen == [("configmaps", "client")]


class _Span:
    def __init__(self) -> None:
        self.attributes: dict[str, Any] = {}

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value


async def test_reconcile_spans_carry_the_shard_of_their_namespace() -> None:
    space = ShardSpace(4)
    ctx = ReconcileContext(
        controller="c",
        request=Request("tenant-a", "obj"),
        timeout=2.0,
        client=None,  # type: ignore[arg-type]
        logger=logging.getLogger("test"),
    )
    ctx.span = _Span()
    ShardSpans(space).reconcile(LifecycleEvent(Step.STARTED, ctx))
    assert ctx.span.attributes == {"wukong.shard": space.shard_of_key("tenant-a")}


def test_member_lease_names_stay_unique_for_long_identities() -> None:
    a, b = "x" * 60 + "_1", "x" * 60 + "_2"
    assert _dns_label(a) != _dns_label(b)
    assert len(_dns_label(a)) <= 63
    assert _dns_label("Host_01").startswith("host-01-")
