"""Shards: active-active replicas that split the objects between them.

The key space is split into a fixed number of shards, equal ranges of a
64-bit FNV-1a hash of each object's key (its namespace, or its uid), the
hash the API server's sharded list and watch use (`shardSelector=
shardRange(object.metadata.namespace, '0x…', '0x…')`, ranges OR-ed with `||`).
Every shard is held through a Lease of its own (`<name>-shard-<i>`), won,
renewed and released by the same `LeaderElector` a single leader uses, so the
same timings and the same guarantee hold per shard: a replica steps down from
a shard before any other may take it.

Fair share. Each replica also holds a member Lease of its own
(`<name>-member-<identity>-<hash>`); the members alive are those whose Lease this
replica has seen change within its duration (on its own monotonic clock, as
the elector times a holder). Of M members and N shards, the first N mod M
(by member Lease name) take ceil(N / M) shards and the others floor(N / M),
so the shares add up to N and none is left without work while another has
two more; a replica releases what is above its share (the highest-numbered
first), so a replica that joins gets shards as the others shed them, and a
crashed one's shards are taken once its Leases expire: within the Lease
duration plus a round or two. While replicas disagree on who is alive (a
round after a join or a crash) the shares may not add up; the Leases still
let no shard be held twice, and the next rounds settle it.

Handoffs are told to the owner (the manager) by `on_change(gained, lost,
reason)` after `held` has changed, so by then the write fence already refuses
what was lost: the owner cancels reconciles in flight there and lists again.
A shard released on purpose is released only after the owner has stopped
working on it.
"""

import asyncio
import bisect
import contextlib
import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from wukong.runtime._client import Client, Object
from wukong.runtime._errors import ApiError
from wukong.runtime._fanout import NO_OBSERVER
from wukong.runtime._leader import LeaderElectionConfig, LeaderElector
from wukong.runtime._observer import LifecycleEvent, RuntimeObserver, Step
from wukong.runtime.resources import LEASES

_log = logging.getLogger("wukong.runtime.shards")

_HASH_SPACE = 1 << 64
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
# The label that groups a sharded operator's Leases, and the role of each.
GROUP_LABEL = "shards.wukong.io/group"
ROLE_LABEL = "shards.wukong.io/role"

ShardKey = Literal["namespace", "uid"]


def fnv1a64(text: str) -> int:
    """64-bit FNV-1a of `text`'s UTF-8 bytes: the API server's shard hash."""
    value = _FNV_OFFSET
    for byte in text.encode():
        value = ((value ^ byte) * _FNV_PRIME) % _HASH_SPACE
    return value


@dataclass(frozen=True)
class ShardSpace:
    """`count` equal ranges of the hash of each object's `key` (namespace or uid)."""

    count: int
    key: ShardKey = "namespace"

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"at least one shard is needed, got {self.count}")

    def bounds(self, shard: int) -> tuple[int, int]:
        """The hash range [low, high) of `shard`."""
        return shard * _HASH_SPACE // self.count, (shard + 1) * _HASH_SPACE // self.count

    def shard_of_key(self, text: str) -> int:
        lows = [self.bounds(shard)[0] for shard in range(self.count)]
        return bisect.bisect_right(lows, fnv1a64(text)) - 1

    def key_of(self, obj: Object) -> str | None:
        """What `obj` is hashed by; None for a cluster-scoped object under namespace keys."""
        metadata = obj.get("metadata") or {}
        if self.key == "namespace":
            return metadata.get("namespace") or None
        return metadata.get("uid")

    def selector(self, shards: Iterable[int]) -> str:
        """The `shardSelector` for `shards`: adjacent ranges merged, the rest OR-ed."""
        ranges: list[tuple[int, int]] = []
        for shard in sorted(set(shards)):
            low, high = self.bounds(shard)
            if ranges and ranges[-1][1] == low:
                ranges[-1] = (ranges[-1][0], high)
            else:
                ranges.append((low, high))
        field = f"object.metadata.{self.key}"
        terms = (f"shardRange({field}, '0x{lo:016x}', '0x{hi:016x}')" for lo, hi in ranges)
        return " || ".join(terms)


class ShardFilter:
    """Which objects this replica holds now: the selector to ask for and the check
    to apply on its side. Cheap per object: hashes are cached by key."""

    def __init__(self, space: ShardSpace) -> None:
        self.space = space
        self.held: frozenset[int] = frozenset()
        self._shard_by_key: dict[str, int] = {}

    def shard_of(self, obj: Object) -> int | None:
        key = self.space.key_of(obj)
        return None if key is None else self.shard_of_key(key)

    def shard_of_key(self, key: str) -> int:
        shard = self._shard_by_key.get(key)
        if shard is None:
            if len(self._shard_by_key) > 100_000:
                self._shard_by_key.clear()  # bounded: keys may be uids
            shard = self._shard_by_key[key] = self.space.shard_of_key(key)
        return shard

    def accepts(self, obj: Object) -> bool:
        shard = self.shard_of(obj)
        return shard is None or shard in self.held

    @property
    def selector(self) -> str | None:
        """The selector for the shards held; None when none is."""
        return self.space.selector(self.held) if self.held else None


class ShardSpans(RuntimeObserver):
    """Puts `wukong.shard` on each reconcile's span: which shard, so which replica's
    share, the object belongs to. Registered after the tracer, which makes the span
    when the reconcile starts."""

    def __init__(self, space: ShardSpace) -> None:
        self._shards = ShardFilter(space)

    def reconcile(self, event: LifecycleEvent) -> None:
        if event.step is not Step.STARTED:
            return
        set_attribute = getattr(event.context.span, "set_attribute", None)
        namespace = event.context.request.namespace
        if set_attribute is not None and namespace:
            set_attribute("wukong.shard", self._shards.shard_of_key(namespace))


def _dns_label(text: str) -> str:
    """`text` fit for a Lease name, unique per `text`: a readable prefix and its hash
    (two pods' long names may share their first characters)."""
    readable = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:40].strip("-")
    return f"{readable or 'replica'}-{fnv1a64(text):016x}"


OnChange = Callable[[frozenset[int], frozenset[int], str], Awaitable[None]]


class ShardHolder:
    """Holds this replica's fair share of the shards, each through its own Lease.

    `run()` until cancelled, then `release()`. `filter.held` is the truth the
    write fence and the informers read.
    """

    def __init__(
        self,
        *,
        client: Client,
        space: ShardSpace,
        election: LeaderElectionConfig,
        on_change: OnChange,
        observer: RuntimeObserver = NO_OBSERVER,
    ) -> None:
        self.space = space
        self.filter = ShardFilter(space)
        self.identity = election.identity
        self._client = client
        self._config = election
        self._on_change = on_change
        self._group = election.name
        self._namespace = election.namespace
        self._electors = [
            LeaderElector(
                client=client,
                config=self._lease_config(f"{election.name}-shard-{shard}", "shard"),
                observer=observer,
            )
            for shard in range(space.count)
        ]
        self._member = LeaderElector(
            client=client,
            config=self._lease_config(
                f"{election.name}-member-{_dns_label(election.identity)}", "member"
            ),
        )
        self._keeping: dict[int, asyncio.Task[None]] = {}
        self._lost: asyncio.Queue[int] = asyncio.Queue()
        self._members_seen: dict[str, tuple[object, float]] = {}  # name: (record, changed at)
        self.members_alive = 1
        self._rank = 0  # this replica's place among the members alive, by Lease name
        self._change_lock = asyncio.Lock()

    def _lease_config(self, name: str, role: str) -> LeaderElectionConfig:
        return dataclasses.replace(
            self._config, name=name, labels=((GROUP_LABEL, self._group), (ROLE_LABEL, role))
        )

    def lease_name(self, shard: int) -> str:
        return self._electors[shard].config.name

    @property
    def held(self) -> frozenset[int]:
        return self.filter.held

    @property
    def share(self) -> int:
        """How many shards this replica should hold now."""
        members = max(1, self.members_alive)
        floor, extra = divmod(self.space.count, members)
        return floor + (1 if self._rank < extra else 0)

    async def run(self) -> None:
        """Take and keep a fair share until cancelled (then call `release`)."""
        await self._member.acquire()
        member = asyncio.create_task(self._member.keep(), name="shard member lease")
        try:
            while True:
                await self._round()
                await self._wait_round()
                if member.done():
                    member.result()  # a renew that raised
                    # The member Lease was lost (API server away too long): win it back.
                    await self._member.acquire()
                    member = asyncio.create_task(self._member.keep(), name="shard member lease")
        finally:
            member.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await member

    async def _wait_round(self) -> None:
        """Sleep a retry period, or less if a shard is lost meanwhile (told at once)."""
        try:
            async with asyncio.timeout(self._config.retry_period):
                shard = await self._lost.get()
        except TimeoutError:
            return
        await self._change(frozenset(), frozenset({shard}), "lost")

    async def _round(self) -> None:
        try:
            leases = await self._client.list(
                LEASES,
                namespace=self._namespace,
                label_selector=f"{GROUP_LABEL}={self._group}",
                timeout=self._config.renew_deadline / 2,
            )
        except (ApiError, TimeoutError, OSError) as exc:
            _log.warning("cannot list the shard Leases: %s", exc)
            return
        self._count_members([i for i in leases["items"] if _role(i) == "member"])
        for lease in leases["items"]:
            if _role(lease) == "shard":
                for elector in self._electors:
                    elector.observe(lease)
        held = set(self.held)
        surplus = sorted(held)[self.share :] if len(held) > self.share else []
        if surplus:
            await self._change(frozenset(), frozenset(surplus), "rebalance")
            for shard in surplus:
                await self._electors[shard].release()
            return
        # Start at a different shard per replica so candidates rarely collide.
        start = fnv1a64(self.identity) % self.space.count
        for step in range(self.space.count):
            if len(held) >= self.share:
                break
            shard = (start + step) % self.space.count
            if shard in held or self._taken(leases["items"], shard):
                continue
            if await self._electors[shard].try_acquire():
                held.add(shard)
                self._keeping[shard] = asyncio.create_task(
                    self._keep(shard), name=f"shard {shard} lease"
                )
                await self._change(frozenset({shard}), frozenset(), "acquired")

    def _taken(self, leases: list[Object], shard: int) -> bool:
        """Held by a live other replica, as far as the list shows (no read needed)."""
        name = self.lease_name(shard)
        for lease in leases:
            if lease["metadata"]["name"] == name:
                holder = (lease.get("spec") or {}).get("holderIdentity")
                return bool(holder) and holder != self.identity and not self._expired(lease)
        return False

    def _expired(self, lease: Object) -> bool:
        name = lease["metadata"]["name"]
        shard = int(name.rsplit("-", 1)[1])
        return self._electors[shard].expired_now()

    def _count_members(self, members: list[Object]) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        alive: list[str] = []
        seen: dict[str, tuple[object, float]] = {}
        for lease in members:
            name = lease["metadata"]["name"]
            spec = lease.get("spec") or {}
            record = (spec.get("holderIdentity"), spec.get("renewTime"))
            previous = self._members_seen.get(name)
            changed_at = previous[1] if previous and previous[0] == record else now
            seen[name] = (record, changed_at)
            duration = spec.get("leaseDurationSeconds") or self._config.lease_duration_seconds
            if record[0] and (record[0] == self.identity or now < changed_at + duration):
                alive.append(name)
        self._members_seen = seen
        if len(alive) != self.members_alive:
            _log.info("%d replicas share %d shards", max(1, len(alive)), self.space.count)
        self.members_alive = max(1, len(alive))
        ours = self._member.config.name
        self._rank = sorted(alive).index(ours) if ours in alive else 0

    async def _keep(self, shard: int) -> None:
        await self._electors[shard].keep()
        # keep() returned: the Lease is lost. Out of the filter now (the fence
        # refuses its writes from here), the owner is told on the next wait.
        self.filter.held = self.held - {shard}
        self._lost.put_nowait(shard)

    async def _change(self, gained: frozenset[int], lost: frozenset[int], reason: str) -> None:
        if reason != "lost":
            lost = lost & self.held
        if not gained and not lost:
            return
        # The filter first: from here on the fence refuses writes to what was lost.
        self.filter.held = (self.held | gained) - lost
        for shard in lost:
            task = self._keeping.pop(shard, None)
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        _log.info(
            "shards %s%s (%s): holding %s of %d",
            f"+{sorted(gained)}" if gained else "",
            f"-{sorted(lost)}" if lost else "",
            reason,
            sorted(self.held),
            self.space.count,
        )
        async with self._change_lock:
            await self._on_change(gained, lost, reason)

    async def release(self) -> None:
        """Give every shard and the member Lease up, so others take them at once."""
        held = self.held
        if held:
            await self._change(frozenset(), held, "shutdown")
        await asyncio.gather(
            *(self._electors[shard].release() for shard in held), self._member.release()
        )


def _role(lease: Object) -> str | None:
    labels = lease["metadata"].get("labels") or {}
    return labels.get(ROLE_LABEL)
