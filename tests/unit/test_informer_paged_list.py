"""An informer's paged list, decoded one object at a time: a malformed page stops
the sync with a clear error, and nothing cached is lost for it."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from wukong.runtime._informer import EventHandler, Informer
from wukong.runtime.resources import CONFIGMAPS


def _configmap(name: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": "1"}}


class _Pages:
    """Serves the given page texts in turn, then a watch that stays quiet."""

    def __init__(self, *texts: str) -> None:
        self.texts = list(texts)
        self.watched = False

    async def _list_text(self, resource: object, *, continue_token: str | None, **_: object) -> str:
        return self.texts[int(continue_token or 0)]

    async def watch(self, resource: object, **_: object) -> AsyncIterator[Any]:
        self.watched = True
        await asyncio.Event().wait()
        yield  # pragma: no cover


def _page(names: list[str], continue_token: str | None) -> str:
    metadata = {"resourceVersion": "9", **({"continue": continue_token} if continue_token else {})}
    return json.dumps({"metadata": metadata, "items": [_configmap(name) for name in names]})


async def test_a_malformed_page_fails_the_sync_and_keeps_what_was_cached() -> None:
    second = _page(["b1", "b2", "b3"], None)
    truncated = second[: second.index('"b3"')]  # the body ends inside its third object
    client = _Pages(_page(["a1", "a2"], "1"), truncated)
    informer = Informer(client=client, resource=CONFIGMAPS, watch_list=False)  # type: ignore[arg-type]
    informer.store.upsert(_configmap("cached-before"))  # not in this list
    added: list[str] = []
    deleted: list[str] = []
    informer.add_handler(
        EventHandler(
            on_add=lambda obj: added.append(obj["metadata"]["name"]),
            on_delete=lambda obj: deleted.append(obj["metadata"]["name"]),
        )
    )
    added.clear()  # the replay of what was cached

    with pytest.raises(json.JSONDecodeError) as failed:
        await asyncio.wait_for(informer.run(), 5)

    assert str(failed.value).startswith("informer configmaps: a malformed list page: ")
    assert failed.value.pos == len(truncated)
    # The objects before the fault were cached and handed on; the list did not end,
    # so nothing was taken for gone, and there is no resourceVersion to watch from.
    assert added == ["a1", "a2", "b1", "b2"]
    assert deleted == []
    assert sorted(informer.store.keys()) == ["ns/a1", "ns/a2", "ns/b1", "ns/b2", "ns/cached-before"]
    assert informer.resource_version is None
    assert not informer.synced.is_set() and informer.paged_list_syncs == 0
    assert not client.watched


async def test_a_well_formed_list_ends_the_sync_and_drops_what_was_not_listed() -> None:
    client = _Pages(_page(["a1", "a2"], "1"), _page(["b1"], None))
    informer = Informer(client=client, resource=CONFIGMAPS, watch_list=False)  # type: ignore[arg-type]
    informer.store.upsert(_configmap("cached-before"))
    running = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 5)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)

    assert sorted(informer.store.keys()) == ["ns/a1", "ns/a2", "ns/b1"]
    assert informer.resource_version == "9" and informer.paged_list_syncs == 1
