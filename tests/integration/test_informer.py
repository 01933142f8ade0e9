"""The informer keeps its cache right across API server restarts and 410 Gone."""

import asyncio

from tests.integration.helpers import Recorder, eventually
from wukong.devcluster import ControlPlane
from wukong.runtime._fanout import ObserverFanout
from wukong.runtime.client import Client, Object
from wukong.runtime.informer import EventHandler, Informer
from wukong.runtime.resources import CONFIGMAPS


def _configmap(namespace: str, name: str, value: str) -> Object:
    return {"metadata": {"name": name, "namespace": namespace}, "data": {"v": value}}


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
    recorder = Recorder()
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
    finally:
        task.cancel()


async def test_the_initial_list_comes_in_pages(client: Client, namespace: str) -> None:
    for name in ("a", "b", "c", "d", "e"):
        await client.create(CONFIGMAPS, _configmap(namespace, name, "1"), namespace=namespace)
    recorder = Recorder()
    informer = Informer(
        client=client.observed_by(ObserverFanout([recorder])),
        resource=CONFIGMAPS,
        namespace=namespace,
        page_size=2,
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
