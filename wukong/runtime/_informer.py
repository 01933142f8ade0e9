"""An informer: list, then watch from that resourceVersion, forever.

Lifecycle of `run()`:

1. SYNC, first by a streaming list (WatchList, KEP-3157, as client-go's
   reflector does): a watch with `sendInitialEvents=true` delivers the current
   state as ADDED events, then a BOOKMARK annotated `k8s.io/initial-events-end`
   carrying the list's resourceVersion; the cache is then synced and the same
   watch goes on with changes. Objects are cached one event at a time, so the
   list is never held twice. An API server that refuses it (an error before
   that bookmark, or a stream that ends without it) is not asked again: the
   informer LISTs in pages of 500 instead, each decoded one object at a time
   (`_listpage`), and remembers the list's resourceVersion. `synced` is set
   after the first sync, either way. After every sync, what the list freed is
   handed back to the system (`_malloc_trim`): a process that lists once would
   keep its high-water.
2. WATCH from the last seen resourceVersion, with bookmarks (which only move
   the resourceVersion forward). A watch ends normally after its server-side
   timeout and is simply restarted from where it was.
3. A silent connection never hangs the informer: `inactivity_timeout` bounds
   the gap between two events and the watch is restarted. v1.36.3 sends a
   quiet watch its first bookmark 2 minutes after it starts, then one a
   minute, so the bound is above 2 minutes: below it, every watch of a quiet
   resource was cut once, for nothing.
4. Connection errors (an API server restart) are retried with exponential
   backoff from the same resourceVersion, so nothing is missed.
5. 410 Gone (the resourceVersion was compacted away) forces a full relist
   (a streaming one when the server offers it); the new list is diffed
   against the cache and handlers see the adds, updates and deletes that
   happened meanwhile — no update is lost, only coalesced.
6. With a `resync_period`, every cached object is handed to the handlers
   again that often, with ±10% jitter, as client-go's resync and
   controller-runtime's SyncPeriod do: a safety net for what no event
   reports, never a substitute for watches. A handler's `on_resync` gets it
   (so a controller can tell a resync from a change); without one, `on_update`
   does, with old == new, as in client-go.

7. With `shards` (a `_shards.ShardFilter`), only the shards this replica
   holds: lists and watches carry their `shardSelector`, and a list's
   `shardInfo` echo says the server applied it (`filtered_by == "server"`).
   Not every server echoes it (v1.36 filters custom resources without the
   echo: `filtered_by == "unconfirmed"`), so every object is checked on this
   side too: one of a shard that was not asked for (counted in
   `foreign_objects`) proves the selector ignored, and a refused selector
   (400) proves it unsupported; either way the informer lists and watches
   without it from then on and keeps only its shards itself, with one
   WARNING and `filtered_by == "client"`. Nothing foreign reaches the cache.
   `reshard()` (the held shards changed) lists again with the new selector:
   objects of shards given up leave the cache silently (they were not
   deleted, only handed over), those of shards taken arrive as adds.
   Sharded informers sync by paged LIST: its answer carries the echo (a
   streaming list filters as well, but says nothing of it).

Handlers are called synchronously on the event loop, in event order; they
should only enqueue work.
"""

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import aiohttp

from wukong.runtime._cache import Store, object_key, strip
from wukong.runtime._client import Client, Object, WatchEvent
from wukong.runtime._errors import ApiError, ApiTimeout, Gone
from wukong.runtime._fanout import NO_OBSERVER
from wukong.runtime._listpage import ListPage
from wukong.runtime._malloc_trim import release_free_memory
from wukong.runtime._observer import RuntimeObserver
from wukong.runtime._shards import ShardFilter
from wukong.runtime.resources import Resource

log = logging.getLogger("wukong.runtime.informer")

# Objects a page: client-go's 500. A page is decoded one object at a time
# (`_listpage`), so its size no longer sets the high-water the Python allocator
# keeps for life (a page decoded whole did: about 15 KB a Wukong of the page);
# fewer, larger pages sync a large share faster.
_PAGE_SIZE = 500
_BACKOFF_INITIAL = 0.2
_BACKOFF_MAX = 30.0
# The annotation on the BOOKMARK that ends a streaming list's initial events.
_INITIAL_EVENTS_END: Final = "k8s.io/initial-events-end"


class _WatchListRefused(Exception):
    """The API server did not serve a streaming list; the paged list must do."""


@dataclass(frozen=True, kw_only=True)
class EventHandler:
    """Callbacks for cache changes (and resyncs); any may be omitted."""

    on_add: Callable[[Object], None] | None = None
    on_update: Callable[[Object, Object], None] | None = None
    on_delete: Callable[[Object], None] | None = None
    # A cached object handed over again by the periodic resync; None: `on_update(obj, obj)`.
    on_resync: Callable[[Object], None] | None = None


class Informer:
    """Keeps a `Store` in sync with one resource (optionally one namespace)."""

    def __init__(
        self,
        *,
        client: Client,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        watch_timeout_seconds: int = 300,
        inactivity_timeout: float = 150.0,
        resync_period: float | None = None,
        page_size: int = _PAGE_SIZE,
        watch_list: bool = True,
        observer: RuntimeObserver = NO_OBSERVER,
        shards: ShardFilter | None = None,
    ) -> None:
        self.resource = resource
        self.namespace = namespace
        self.store = Store()
        self.synced = asyncio.Event()
        # Counters tests and operators can read: how often we had to start over.
        self.relists = 0
        self.watch_restarts = 0
        # How each sync (the first and every relist) was done: by a streaming
        # list (WatchList) or by a paged LIST.
        self.watch_list_syncs = 0
        self.paged_list_syncs = 0
        # Cleared for good when the server refuses a streaming list, or by the caller.
        self.watch_list = watch_list and shards is None
        # Sharded: "server" once a list's shardInfo echoed the selector, "client" when
        # the server ignored or refused it; objects outside the shards received.
        self.filtered_by: str | None = None
        self.foreign_objects = 0
        self._shards = shards
        self._server_filters = True
        self._asked: frozenset[int] | None = None  # the shards the selector in use names
        self._reshard = asyncio.Event()
        self._relist_cause = "gone"
        self._client = client
        self._label_selector = label_selector
        self._field_selector = field_selector
        self._watch_timeout = watch_timeout_seconds
        self._inactivity_timeout = inactivity_timeout
        self._resync_period = resync_period
        self._page_size = page_size
        self._observer = observer
        self._handlers: list[EventHandler] = []
        self._resource_version: str | None = None

    def add_handler(self, handler: EventHandler) -> None:
        """Register handlers; objects already cached are replayed as adds."""
        self._handlers.append(handler)
        if handler.on_add is not None:
            for obj in self.store.list_objects():
                handler.on_add(obj)

    @property
    def resource_version(self) -> str | None:
        return self._resource_version

    async def run(self) -> None:
        """List and watch (and resync, if asked) until cancelled."""
        resync = (
            asyncio.create_task(self._resync_periodically(), name=f"resync {self._what}")
            if self._resync_period
            else None
        )
        try:
            if self._shards is None:
                await self._list_and_watch()
            else:
                await self._list_and_watch_shards(self._shards)
        finally:
            if resync is not None:
                resync.cancel()

    def reshard(self) -> None:
        """The shards held changed: list again with the new selector."""
        self._reshard.set()

    async def _list_and_watch_shards(self, shards: ShardFilter) -> None:
        while True:
            self._reshard.clear()
            # What was handed over leaves now, before the list: nothing of it is
            # served from the cache while the new list is under way.
            for key in self.store.keys():
                obj = self.store.get(key)
                if obj is not None and not shards.accepts(obj):
                    self.store.remove(key)
            if shards.selector is None:  # no shard held: nothing to list
                self._resource_version = None
                self.synced.set()
                await self._reshard.wait()
                continue
            if self._resource_version is not None or self.synced.is_set():
                self._relist_cause = "reshard"
            self._resource_version = None
            work = asyncio.ensure_future(self._list_and_watch())
            reshard = asyncio.ensure_future(self._reshard.wait())
            try:
                await asyncio.wait({work, reshard}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (work, reshard):
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work

    async def _resync_periodically(self) -> None:
        assert self._resync_period is not None
        while True:
            await asyncio.sleep(self._resync_period * random.uniform(0.9, 1.1))
            if not self.synced.is_set():
                continue
            for obj in self.store.list_objects():
                for handler in self._handlers:
                    if handler.on_resync is not None:
                        self._call(handler.on_resync, obj)
                    else:
                        self._call(handler.on_update, obj, obj)

    async def _list_and_watch(self) -> None:
        backoff = _BACKOFF_INITIAL
        while True:
            try:
                if self._resource_version is not None:
                    await self._watch_once()
                else:
                    await self._sync_and_watch()
                backoff = _BACKOFF_INITIAL
                cause = "expired"  # the server ended it after its timeout: normal
            except Gone:
                log.info(
                    "%s: resourceVersion %s is gone; relisting", self._what, self._resource_version
                )
                self._resource_version = None
                cause = "gone"
            except (ApiTimeout, aiohttp.ClientError, ConnectionError, OSError) as exc:
                cause = "timeout" if isinstance(exc, ApiTimeout | TimeoutError) else "error"
                # The API server is restarting or unreachable: keep the
                # resourceVersion and come back after a backoff.
                log.info(
                    "%s: watch interrupted (%s); retrying in %.1fs",
                    self._what,
                    exc or type(exc).__name__,
                    backoff,
                )
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, _BACKOFF_MAX)
            except ApiError as exc:
                if exc.status < 500 and exc.status != 429:
                    raise  # 401/403/404: configuration problems; retrying will not help
                log.info("%s: server error %s; retrying in %.1fs", self._what, exc.status, backoff)
                cause = "error"
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, _BACKOFF_MAX)
            self.watch_restarts += 1
            self._observer.watch_restarted(self.resource.plural, cause)

    @property
    def _what(self) -> str:
        scope = f" in {self.namespace}" if self.namespace else ""
        return f"informer {self.resource.plural}{scope}"

    async def _sync_and_watch(self) -> None:
        if self.synced.is_set():
            # Only a 410 Gone makes an informer list again after its first list.
            self.relists += 1
            self._observer.relisted(self.resource.plural, self._relist_cause)
            self._relist_cause = "gone"
        if self.watch_list:
            try:
                await self._watch_list()
                return
            except _WatchListRefused as exc:
                self.watch_list = False
                log.debug("%s: no streaming list (%s); listing in pages", self._what, exc)
        await self._relist()
        # The list's pages are freed by now, but the C allocator would keep what they
        # took for the life of the process: handed back, once per sync (it walks the heap).
        release_free_memory()
        await self._watch_once()

    async def _watch_list(self) -> None:
        """Sync through a streaming list, then go on watching on the same stream."""
        log.debug("%s: syncing through a streaming list (WatchList)", self._what)
        listed: set[str] | None = set()  # None once the initial events have ended
        timeout = int(self._watch_timeout * random.uniform(1.0, 2.0))
        events = self._client.watch(
            self.resource,
            namespace=self.namespace,
            timeout_seconds=timeout,
            inactivity_timeout=self._inactivity_timeout,
            label_selector=self._label_selector,
            field_selector=self._field_selector,
            send_initial_events=True,
        )
        try:
            async for event in events:
                if listed is None:
                    self._apply_event(event)
                elif event.type == "BOOKMARK":
                    annotations = event.object["metadata"].get("annotations") or {}
                    if annotations.get(_INITIAL_EVENTS_END) == "true":
                        self._drop_unlisted(listed)
                        listed = None
                        self._resource_version = event.object["metadata"]["resourceVersion"]
                        self.watch_list_syncs += 1
                        self.synced.set()
                        release_free_memory()  # once per sync, as after a paged list
                else:
                    # Before the end bookmark the resourceVersion is not one to
                    # resume from: a broken stream starts the sync over.
                    key = object_key(event.object)
                    if event.type == "DELETED":
                        listed.discard(key)
                    else:
                        listed.add(key)
                    self._apply_event(event, track_version=False)
        except ApiError as exc:
            if listed is None or exc.status == 429:
                raise  # a failure of the watch itself, not a refusal
            raise _WatchListRefused(f"the API server answered {exc}") from exc
        if listed is not None:
            raise _WatchListRefused("the stream ended before its initial-events-end bookmark")

    async def _relist(self) -> None:
        """List in pages (as client-go's pager does), so that only one page's text,
        and one of its objects decoded, is ever held next to the cache it fills;
        then drop what is gone."""
        log.debug("%s: syncing through a paged list", self._what)
        listed: set[str] = set()
        continue_token = None
        while True:
            try:
                page = await self._list_page(continue_token)
                # One object decoded at a time, cached (as compact JSON) and let go
                # before the next: the page's objects are never all decoded at once.
                for item in page.items():
                    listed.add(object_key(item))
                    self._apply_upsert(item)
                metadata = page.metadata
            except json.JSONDecodeError as exc:
                # What came before the fault is cached; nothing is dropped as unlisted
                # and the resourceVersion stays, as for any failed list.
                raise json.JSONDecodeError(
                    f"{self._what}: a malformed list page: {exc.msg}", exc.doc, exc.pos
                ) from None
            # Let the page's text go before the next one is fetched.
            del page
            continue_token = metadata.get("continue")
            if not continue_token:
                break
        self._drop_unlisted(listed)
        # The last page's resourceVersion is the list's: watch from there.
        self._resource_version = metadata["resourceVersion"]
        self.paged_list_syncs += 1
        self.synced.set()

    async def _list_page(self, continue_token: str | None) -> ListPage:
        selector = self._shard_selector
        self._asked = self._asked_for(selector)
        try:
            text = await self._client._list_text(
                self.resource,
                namespace=self.namespace,
                label_selector=self._label_selector,
                field_selector=self._field_selector,
                limit=self._page_size,
                continue_token=continue_token,
                timeout=60,
                shard_selector=selector,
            )
        except ApiError as exc:
            if selector is None or exc.status != 400 or continue_token:
                raise
            self._filter_on_this_side(f"the API server refused it: {exc.message}")
            return await self._list_page(None)
        page = ListPage(text)
        del text
        if selector is not None and not continue_token:
            echoed = (page.metadata.get("shardInfo") or {}).get("selector")
            if echoed:
                if self.filtered_by != "server":
                    log.info("%s: the API server filters by shard (%s)", self._what, echoed)
                self.filtered_by = "server"
            elif self.filtered_by is None:
                self.filtered_by = "unconfirmed"
                log.info(
                    "%s: the API server does not echo the shard selector (no shardInfo); "
                    "every object is checked on this side",
                    self._what,
                )
        return page

    def _asked_for(self, selector: str | None) -> frozenset[int] | None:
        return None if self._shards is None or selector is None else self._shards.held

    @property
    def _shard_selector(self) -> str | None:
        if self._shards is None or not self._server_filters:
            return None
        return self._shards.selector

    def _filter_on_this_side(self, why: str) -> None:
        self._server_filters = False
        self.filtered_by = "client"
        log.warning(
            "%s: shardSelector not applied by the API server (%s): listing and watching "
            "every object and keeping only the shards held",
            self._what,
            why,
        )
        self._observer.shard_filtering(self.resource.plural, "client")

    def _foreign(self, obj: Object) -> bool:
        """An object of a shard not held: kept out of (and taken from) the cache.

        One of a shard the selector did not name proves the server ignores it;
        one the selector named was just handed over (events in flight).
        """
        shards = self._shards
        if shards is None or shards.accepts(obj):
            return False
        self.store.remove(object_key(obj))
        if self._asked is not None and shards.shard_of(obj) not in self._asked:
            self.foreign_objects += 1
            if self.filtered_by != "client":
                self._filter_on_this_side("it sent objects of shards not asked for")
        return True

    def _drop_unlisted(self, listed: set[str]) -> None:
        """Replace semantics of a (re)list: what is cached but was not listed is gone
        (or, sharded, handed over: then it leaves silently)."""
        for key in self.store.keys():
            if key not in listed:
                old = self.store.remove(key)
                if old is not None and (self._shards is None or self._shards.accepts(old)):
                    self._dispatch_delete(old)

    async def _watch_once(self) -> None:
        # Jitter spreads the re-watches of many informers, as client-go does.
        timeout = int(self._watch_timeout * random.uniform(1.0, 2.0))
        selector = self._shard_selector
        self._asked = self._asked_for(selector)
        async for event in self._client.watch(
            self.resource,
            namespace=self.namespace,
            resource_version=self._resource_version,
            timeout_seconds=timeout,
            inactivity_timeout=self._inactivity_timeout,
            label_selector=self._label_selector,
            field_selector=self._field_selector,
            shard_selector=selector,
        ):
            self._apply_event(event)

    def _apply_event(self, event: WatchEvent, *, track_version: bool = True) -> None:
        obj = event.object
        if event.type != "BOOKMARK" and self._foreign(obj):
            pass
        elif event.type == "DELETED":
            self.store.remove(object_key(obj))
            self._dispatch_delete(strip(obj))
        elif event.type in ("ADDED", "MODIFIED"):
            self._apply_upsert(obj)
        if track_version:
            # BOOKMARK carries only a resourceVersion; every event advances it.
            self._resource_version = obj["metadata"]["resourceVersion"]

    def _apply_upsert(self, obj: Object) -> None:
        if self._foreign(obj):
            return
        old, new = self.store.upsert(obj)
        if old is None:
            for handler in self._handlers:
                self._call(handler.on_add, new)
        elif old["metadata"].get("resourceVersion") != new["metadata"].get("resourceVersion"):
            for handler in self._handlers:
                self._call(handler.on_update, old, new)

    def _dispatch_delete(self, obj: Object) -> None:
        for handler in self._handlers:
            self._call(handler.on_delete, obj)

    def _call(self, callback: Callable[..., None] | None, *objects: Object) -> None:
        # A failing handler (e.g. a user's map function) must not stop the
        # informer: the cache would silently go stale for every controller.
        if callback is None:
            return
        try:
            callback(*objects)
        except Exception:
            log.exception("%s: event handler %r failed", self._what, callback)
