"""The cache's Store: indexes that follow updates and removals, reads that are copies."""

from wukong.runtime import Store


def test_index_follows_updates_and_removals() -> None:
    store = Store()
    store.add_index("pod", lambda obj: [obj["spec"]["podName"]] if "podName" in obj["spec"] else [])
    store.upsert(
        {
            "metadata": {"name": "vm", "namespace": "ns", "managedFields": [{}]},
            "spec": {"podName": "p1"},
        }
    )
    assert [o["metadata"]["name"] for o in store.by_index("pod", "p1")] == ["vm"]
    assert "managedFields" not in store.get("ns/vm")["metadata"]  # type: ignore[index]
    store.upsert({"metadata": {"name": "vm", "namespace": "ns"}, "spec": {"podName": "p2"}})
    assert store.by_index("pod", "p1") == []
    store.remove("ns/vm")
    assert store.by_index("pod", "p2") == []


def test_reads_return_copies_the_cache_keeps() -> None:
    store = Store()
    old, stored = store.upsert({"metadata": {"name": "a", "namespace": "ns"}, "data": {"k": "1"}})
    assert old is None and stored["data"] == {"k": "1"}
    read = store.get("ns/a")
    assert read == stored
    read["data"]["k"] = "changed by a careless reconciler"  # type: ignore[index]
    assert store.get("ns/a")["data"] == {"k": "1"}  # type: ignore[index]
    old, _ = store.upsert({"metadata": {"name": "a", "namespace": "ns"}, "data": {"k": "2"}})
    assert old is not None and old["data"] == {"k": "1"}
    assert [o["data"] for o in store.list_objects(namespace="ns")] == [{"k": "2"}]
    assert store.list_objects(namespace="other") == []
