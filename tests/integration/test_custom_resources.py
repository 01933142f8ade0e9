"""The project's client against the real API server: CRDs and custom objects."""

import asyncio
import uuid

import pytest

from tests.integration.helpers import install_test_crd
from wukong.runtime import AlreadyExists, Client, Gone, NotFound
from wukong.runtime._client import WatchEvent
from wukong.runtime.resources import Resource

GROUP = "harness.test.novasphere.dev"


@pytest.fixture
async def gadgets(client: Client) -> Resource:
    # Kinds must be unique within a group, so each test gets its own.
    return await install_test_crd(client, group=GROUP, kind=f"Gadget{uuid.uuid4().hex[:6]}")


async def test_create_and_watch_custom_object(
    client: Client, namespace: str, gadgets: Resource
) -> None:
    listed = await client.list(gadgets, namespace=namespace)
    assert listed["items"] == []

    events: list[WatchEvent] = []

    async def watch_until_added() -> None:
        async for event in client.watch(
            gadgets,
            namespace=namespace,
            timeout_seconds=30,
            resource_version=listed["metadata"]["resourceVersion"],
        ):
            events.append(event)
            if event.type == "ADDED":
                return

    watcher = asyncio.create_task(watch_until_added())
    created = await client.create(
        gadgets,
        {
            "apiVersion": gadgets.api_version,
            "kind": gadgets.kind,
            "metadata": {"name": "g1", "namespace": namespace},
            "spec": {"size": 3},
        },
    )
    await asyncio.wait_for(watcher, timeout=30)

    added = [e for e in events if e.type == "ADDED"]
    assert added[0].object["metadata"]["uid"] == created["metadata"]["uid"]
    assert added[0].object["spec"] == {"size": 3}
    fetched = await client.get(gadgets, "g1", namespace=namespace)
    assert fetched["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


async def test_errors_are_distinct(client: Client, namespace: str, gadgets: Resource) -> None:
    body = {
        "apiVersion": gadgets.api_version,
        "kind": gadgets.kind,
        "metadata": {"name": "dup", "namespace": namespace},
        "spec": {"size": 1},
    }
    await client.create(gadgets, body)
    with pytest.raises(AlreadyExists):
        await client.create(gadgets, body)
    with pytest.raises(NotFound):
        await client.get(gadgets, "missing", namespace=namespace)


async def test_watch_from_compacted_version_raises_gone(
    client: Client, namespace: str, gadgets: Resource
) -> None:
    # resourceVersion "1" predates everything this session wrote, so it is too
    # old for the watch cache: the server answers 410 Gone.
    with pytest.raises(Gone):
        async for _ in client.watch(
            gadgets, namespace=namespace, resource_version="1", timeout_seconds=5
        ):
            pass
