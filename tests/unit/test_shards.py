"""The shard space: the API server's hash, ranges, selectors and the client-side filter."""

import hashlib
import uuid
from collections import Counter

import pytest

from wukong.runtime._fence import WriteFence
from wukong.runtime._shards import ShardFilter, ShardSpace, fnv1a64


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
