"""The informer keeps its cache right across API server restarts and 410 Gone."""

import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from tests.integration.helpers import RecordingObserver
from tests.polling import eventually
from wukong.devcluster import ControlPlane, ephemeral_control_plane
from wukong.runtime import Client, EventHandler, Informer, Object
from wukong.runtime._calls import layered
from wukong.runtime._fanout import ObserverFanout
from wukong.runtime.resources import CONFIGMAPS, EVENTS, NAMESPACES, Resource


def _configmap(namespace: str, name: str, value: str) -> Object:
    return {"metadata": {"name": name, "namespace": namespace}, "data": {"v": value}}


def _event(namespace: str, name: str, message: str) -> Object:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": {"kind": "ConfigMap", "name": "cm", "namespace": namespace},
        "reason": "Test",
        "message": message,
    }


def _text(obj: Object) -> str:
    """The value `_configmap` or `_event` made, of either kind."""
    return str(obj["data"]["v"] if "data" in obj else obj["message"])


def _change(resource: Resource, value: str) -> Object:
    return {"data": {"v": value}} if resource is CONFIGMAPS else {"message": value}


def _observed_informer(
    client: Client, resource: Resource, namespace: str, **options: Any
) -> tuple[Informer, RecordingObserver]:
    """An informer whose API calls, relists and watch restarts a recorder keeps."""
    recorder = RecordingObserver()
    informer = Informer(
        client=layered(client, observer=ObserverFanout([recorder])),
        resource=resource,
        namespace=namespace,
        observer=recorder,
        **options,
    )
    return informer, recorder


async def _value(informer: Informer, namespace: str, name: str) -> str | None:
    obj = informer.store.get(f"{namespace}/{name}")
    return None if obj is None else obj["data"]["v"]


async def test_cache_strips_managed_fields_and_indexes(client: Client, namespace: str) -> None:
    informer = Informer(client=client, resource=CONFIGMAPS, namespace=namespace)
    informer.store.add_index("by-value", lambda obj: [obj.get("data", {}).get("v", "")])
    task = asyncio.create_task(informer.run())
    try:
        await client.create(CONFIGMAPS, _configmap(namespace, "a", "x"), namespace=namespace)
        await client.create(
            CONFIGMAPS,
            {
                **_configmap(namespace, "b", "y"),
                "metadata": {"name": "b", "namespace": namespace, "labels": {"tier": "db"}},
            },
        )
        await asyncio.wait_for(informer.synced.wait(), 10)
        await eventually(lambda: len(informer.store) == 2, what="both ConfigMaps cached")
        cached = informer.store.get(f"{namespace}/a")
        assert cached is not None and "managedFields" not in cached["metadata"]
        assert [o["metadata"]["name"] for o in informer.store.by_index("by-value", "y")] == ["b"]
        assert [
            o["metadata"]["name"]
            for o in informer.store.list_objects(label_selector="tier in (db,cache)")
        ] == ["b"]
    finally:
        task.cancel()


async def test_watch_survives_apiserver_restart_and_gone(
    control_plane: ControlPlane, client: Client, namespace: str
) -> None:
    recorder = RecordingObserver()
    informer = Informer(client=client, resource=CONFIGMAPS, namespace=namespace, observer=recorder)
    seen: list[str] = []
    informer.add_handler(
        EventHandler(
            on_update=lambda old, new: seen.append(new["data"]["v"]),
            on_delete=lambda obj: seen.append(f"deleted {obj['metadata']['name']}"),
        )
    )
    await client.create(CONFIGMAPS, _configmap(namespace, "cm", "1"), namespace=namespace)
    await client.create(CONFIGMAPS, _configmap(namespace, "doomed", "1"), namespace=namespace)
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 10)

        # 1. A restart: the watch breaks; the informer comes back by itself
        # (resuming, or relisting when the new watch cache starts later).
        control_plane.restart_apiserver(progress=lambda _: None)
        await client.patch(CONFIGMAPS, "cm", {"data": {"v": "2"}}, namespace=namespace)
        await eventually(lambda: "2" in seen, what="the update made after the restart")
        relists_before = informer.relists
        # Observers (metrics: wukong_watch_restarts_total) heard why the watch restarted.
        assert {cause for _, cause in recorder.watch_restarts} & {"error", "timeout", "gone"}
        restarts_before = len(recorder.watch_restarts)

        # 2. A gap: the informer is away while an update and a delete happen,
        # etcd is compacted past its resourceVersion and the API server
        # restarts (fresh watch cache). Resuming gets 410 Gone; the relist
        # must still deliver both changes.
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.patch(CONFIGMAPS, "cm", {"data": {"v": "3"}}, namespace=namespace)
        await client.delete(CONFIGMAPS, "doomed", namespace=namespace)
        control_plane.compact_etcd()
        control_plane.restart_apiserver(progress=lambda _: None)
        task = asyncio.create_task(informer.run())
        await eventually(
            lambda: "3" in seen and "deleted doomed" in seen,
            timeout=40,
            what="the update and delete made while the informer was away",
        )
        assert informer.relists == relists_before + 1
        assert ("configmaps", "gone") in recorder.watch_restarts[restarts_before:]
        assert recorder.relists[-1] == ("configmaps", "gone")
        assert len(recorder.relists) == informer.relists
        assert await _value(informer, namespace, "cm") == "3"
        assert informer.store.get(f"{namespace}/doomed") is None
        # Every sync, the first and each relist, was a streaming list.
        assert (informer.watch_list_syncs, informer.paged_list_syncs) == (informer.relists + 1, 0)
    finally:
        task.cancel()


async def test_the_initial_list_comes_in_pages(client: Client, namespace: str) -> None:
    for name in ("a", "b", "c", "d", "e"):
        await client.create(CONFIGMAPS, _configmap(namespace, name, "1"), namespace=namespace)
    # Paged lists are what a cluster without streaming lists gets.
    informer, recorder = _observed_informer(
        client, CONFIGMAPS, namespace, page_size=2, watch_list=False
    )
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sorted(key.split("/")[1] for key in informer.store.keys()) == ["a", "b", "c", "d", "e"]
    lists = [call for call in recorder.calls if call.verb == "list"]
    assert len(lists) == 3  # 2 + 2 + 1


# This cluster streams initial lists of every resource: ConfigMaps from the API
# server's watch cache (etcd 3.6 has the progress notifications it needs), Events
# from etcd directly. A cluster whose WatchList feature gate is off (the default
# before Kubernetes 1.32) refuses `sendInitialEvents`; `old_control_plane` is one.


@pytest.fixture(scope="module")
def old_control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with ephemeral_control_plane(
        progress=lambda message: print(message, file=sys.stderr),
        state_dir=tmp_path_factory.mktemp("control-plane-without-watchlist"),
        feature_gates=("WatchList=false",),
    ) as plane:
        yield plane


@pytest.fixture
async def old_client(old_control_plane: ControlPlane) -> AsyncIterator[Client]:
    async with await Client.from_kubeconfig(old_control_plane.kubeconfig) as api:
        await api.create(NAMESPACES, {"metadata": {"name": "old"}})
        yield api


@pytest.mark.parametrize(
    ("resource", "make"),
    [(CONFIGMAPS, _configmap), (EVENTS, _event)],
    ids=["from-the-watch-cache", "from-etcd"],
)
async def test_sync_through_a_streaming_list_then_changes_on_the_same_watch(
    control_plane: ControlPlane,
    client: Client,
    namespace: str,
    resource: Resource,
    make: Callable[[str, str, str], Object],
) -> None:
    for name in ("a", "b", "doomed"):
        await client.create(resource, make(namespace, name, "1"), namespace=namespace)
    informer, recorder = _observed_informer(client, resource, namespace)
    seen: list[str] = []
    informer.add_handler(
        EventHandler(
            on_add=lambda obj: seen.append(f"added {obj['metadata']['name']}"),
            on_update=lambda old, new: seen.append(f"{new['metadata']['name']} {_text(new)}"),
            on_delete=lambda obj: seen.append(f"deleted {obj['metadata']['name']}"),
        )
    )
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 10)
        assert (informer.watch_list_syncs, informer.paged_list_syncs) == (1, 0)
        assert sorted(informer.store.keys()) == [f"{namespace}/{n}" for n in ("a", "b", "doomed")]

        await client.create(resource, make(namespace, "c", "1"), namespace=namespace)
        await client.patch(resource, "a", _change(resource, "2"), namespace=namespace)
        await eventually(lambda: "a 2" in seen, what="the change made after the sync")
        assert "added c" in seen
        # Both arrived on the stream that did the sync: no LIST, no second watch.
        assert [call.verb for call in recorder.calls] == ["watch"]
        assert recorder.watch_restarts == [] and informer.watch_restarts == 0

        # A gap: while the informer is away, an update and a delete happen and
        # etcd is compacted, so resuming gets 410 Gone. The relist is streamed
        # too, and what it did not deliver is deleted from the cache.
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.patch(resource, "b", _change(resource, "3"), namespace=namespace)
        await client.delete(resource, "doomed", namespace=namespace)
        control_plane.compact_etcd()
        # A restarted watch cache starts at the newest revision (the old one
        # kept the gap's events in memory, past etcd's compaction).
        control_plane.restart_apiserver(progress=lambda _: None)
        task = asyncio.create_task(informer.run())
        await eventually(
            lambda: "b 3" in seen and "deleted doomed" in seen,
            what="the update and delete made while the informer was away",
        )
        assert (informer.watch_list_syncs, informer.paged_list_syncs) == (2, 0)
        assert informer.relists == 1 and recorder.relists == [(resource.plural, "gone")]
        assert (resource.plural, "gone") in recorder.watch_restarts
        assert sorted(informer.store.keys()) == [f"{namespace}/{n}" for n in ("a", "b", "c")]
        assert "list" not in [call.verb for call in recorder.calls]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_refused_streaming_list_falls_back_to_the_paged_list_for_good(
    old_client: Client,
) -> None:
    client, namespace = old_client, "old"
    await client.create(CONFIGMAPS, _configmap(namespace, "cm", "1"), namespace=namespace)
    informer, recorder = _observed_informer(client, CONFIGMAPS, namespace)
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 10)
        assert (informer.watch_list_syncs, informer.paged_list_syncs) == (0, 1)
        assert not informer.watch_list
        await eventually(
            lambda: [call.verb for call in recorder.calls] == ["watch", "list", "watch"],
            what="the refused streaming list, a list, a watch from its resourceVersion",
        )
        assert list(informer.store.keys()) == [f"{namespace}/cm"]
        await client.patch(CONFIGMAPS, "cm", {"data": {"v": "2"}}, namespace=namespace)

        async def updated() -> bool:
            return await _value(informer, namespace, "cm") == "2"

        await eventually(updated, what="the change after the paged list")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_streaming_list_can_be_turned_off(client: Client, namespace: str) -> None:
    await client.create(EVENTS, _event(namespace, "a", "1"), namespace=namespace)
    informer, recorder = _observed_informer(client, EVENTS, namespace, watch_list=False)
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 10)
        await eventually(
            lambda: [call.verb for call in recorder.calls] == ["list", "watch"],
            what="a list, then a watch from its resourceVersion",
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert (informer.watch_list_syncs, informer.paged_list_syncs) == (0, 1)
    assert list(informer.store.keys()) == [f"{namespace}/a"]
