"""What a list frees goes back to the system: one page held at a time, the C heap
trimmed once per sync."""

import asyncio
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from wukong.runtime import _informer
from wukong.runtime._informer import Informer
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
    """Serves `pages` pages of `size` ConfigMaps, then a watch that stays quiet."""

    def __init__(self, pages: int, size: int) -> None:
        self.pages, self.size = pages, size
        self.alive_at_fetch: list[int] = []  # objects of earlier pages still alive, per fetch
        self._served: list[weakref.ref[Item]] = []

    async def list(self, resource: object, *, continue_token: str | None, **_: object) -> Any:
        self.alive_at_fetch.append(sum(ref() is not None for ref in self._served))
        number = int(continue_token or 0)
        items = [
            Item(metadata={"namespace": "ns", "name": f"cm-{number}-{i}", "resourceVersion": "1"})
            for i in range(self.size)
        ]
        self._served += [weakref.ref(item) for item in items]
        more = {"continue": str(number + 1)} if number + 1 < self.pages else {}
        return {"metadata": {"resourceVersion": "7", **more}, "items": items}

    async def watch(self, resource: object, **_: object) -> AsyncIterator[Any]:
        await asyncio.Event().wait()
        yield  # pragma: no cover


async def test_a_paged_sync_holds_one_page_and_trims_once(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    monkeypatch.setattr(_informer, "release_free_memory", lambda: trims.append(1) or True)
    client = PagedClient(pages=3, size=5)
    informer = Informer(client=client, resource=CONFIGMAPS, watch_list=False)  # type: ignore[arg-type]
    running = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 5)
        await asyncio.sleep(0.05)  # into the watch that follows
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)

    assert len(informer.store) == 15
    # Each page, cached, was let go before the next was asked for (the last
    # object of a page may outlive it by one fetch, as the loop's variable).
    assert all(alive <= 1 for alive in client.alive_at_fetch), client.alive_at_fetch
    assert len(client.alive_at_fetch) == 3
    assert trims == [1]  # once for the sync, nothing for the watch
