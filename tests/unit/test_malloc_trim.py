"""What a list frees goes back to the system: one listed object decoded at a time,
the C heap trimmed once per sync."""

import asyncio
import json
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from wukong.runtime import _informer, _listpage
from wukong.runtime._informer import EventHandler, Informer
from wukong.runtime._malloc_trim import release_free_memory
from wukong.runtime.resources import CONFIGMAPS

GLIBC = release_free_memory()


def rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_freed_heap_goes_back_to_the_system() -> None:
    # Blocks above Python's small-object limit come from malloc; the last one
    # pins the top of the heap, so freeing the rest gives nothing back by itself.
    freed = [bytearray(3000) for _ in range(20_000)]  # 57 MiB
    pin = bytearray(3000)
    del freed
    before = rss_mib()

    assert release_free_memory()

    assert before - rss_mib() > 30
    del pin


class Item(dict[str, Any]):
    """A listed object that can be watched for being freed (a dict cannot)."""


class PagedClient:
    """Serves `pages` pages of `size` ConfigMaps as JSON text, then a watch that stays
    quiet; the listed objects the informer decodes are `Item`s, counted while alive."""

    def __init__(self, pages: int, size: int) -> None:
        self.pages, self.size = pages, size
        self.alive_at_fetch: list[int] = []  # listed objects still alive, per fetch
        self.alive_at_add: list[int] = []  # the same, as each object is cached
        self._decoded: list[weakref.ref[Item]] = []

    def item(self, fields: dict[str, Any]) -> dict[str, Any]:
        """The JSON decoder's object hook: a listed object becomes a counted `Item`."""
        if "name" not in fields.get("metadata", {}):
            return fields
        item = Item(fields)
        self._decoded.append(weakref.ref(item))
        return item

    def alive(self) -> int:
        return sum(ref() is not None for ref in self._decoded)

    async def _list_text(self, resource: object, *, continue_token: str | None, **_: object) -> str:
        self.alive_at_fetch.append(self.alive())
        number = int(continue_token or 0)
        items = [
            {"metadata": {"namespace": "ns", "name": f"cm-{number}-{i}", "resourceVersion": "1"}}
            for i in range(self.size)
        ]
        more = {"continue": str(number + 1)} if number + 1 < self.pages else {}
        page = {"apiVersion": "v1", "kind": "ConfigMapList", "items": items}
        page["metadata"] = {"resourceVersion": "7", **more}
        # Sorted, as a custom resource's list is written: `items` before `metadata`.
        return json.dumps(page, sort_keys=True)

    async def watch(self, resource: object, **_: object) -> AsyncIterator[Any]:
        await asyncio.Event().wait()
        yield  # pragma: no cover


async def test_a_paged_sync_decodes_one_object_at_a_time_and_trims_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trims: list[int] = []
    monkeypatch.setattr(_informer, "release_free_memory", lambda: trims.append(1) or True)
    client = PagedClient(pages=3, size=5)
    monkeypatch.setattr(_listpage, "_DECODER", json.JSONDecoder(object_hook=client.item))
    informer = Informer(client=client, resource=CONFIGMAPS, watch_list=False)  # type: ignore[arg-type]
    informer.add_handler(
        EventHandler(on_add=lambda obj: client.alive_at_add.append(client.alive()))
    )
    running = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 5)
        await asyncio.sleep(0.05)  # into the watch that follows
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)

    assert len(informer.store) == 15
    # Each object was the only one of the list decoded while it was cached (a page
    # decoded whole would have had all five of it alive)...
    assert client.alive_at_add == [1] * 15
    # ...and a page was let go before the next was asked for (the last object of a
    # page may outlive it by one fetch, as the loop's variable).
    assert all(alive <= 1 for alive in client.alive_at_fetch), client.alive_at_fetch
    assert len(client.alive_at_fetch) == 3
    assert trims == [1]  # once for the sync, nothing for the watch
