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

One shard space at a time. Leases named alike cover different hash ranges
under different counts (`-shard-3` of 12 is not `-shard-3` of 16), and a single
leader (the Lease named after the group itself) reconciles everything; so
replicas of two spaces (another count or key, or sharding on against off), as
during a rolling update that changes them, must never both write. Every shard
and member Lease records its space (`shards.wukong.io/count`,
`shards.wukong.io/by`; the unsharded leader's Lease is the space "unsharded",
a Lease that records none is of an unknown space). The rule is the oldest one
for mutual exclusion: raise your flag, then look. A replica's flags are the
shard Leases it holds (a single leader's, its Lease); a replica that holds
nothing and wins a shard looks again (a list after the write) before it works
on it, and gives the shard back if a live Lease (held and not expired, timed
on this replica's clock) of another space holds a shard or the leader Lease.
Of two replicas of different spaces, the later to look sees the other's flag
(lists are consistent reads, and a record first seen counts as live), so at
most one passes; one that passed keeps its flags renewed, so none of another
space passes while it holds any, and it need not look again until it holds
nothing (another space's flags it sees meanwhile are attempts that will be
given back). Member Leases are no flags: a waiting replica keeps one, and two
spaces waiting on each other's would wait forever. Two that raced and both
gave their shard back sit out 1 to 3 rounds at random, so the next race has a
winner. A replica that holds nothing and sees another space live does
not even try: it waits, holds no shard, says so (a WARNING naming the other
space and its holders, again when they change; `space_conflict` to observers) and stays ready
(its informers are synced), so a rolling update goes on: the old pods stop,
their Leases are released or expire, and the new space takes every shard
within a round. Readiness stays true on purpose: a Deployment that waits for
a new pod to be ready before stopping an old one would otherwise never stop
the old ones that the new pod waits for.
"""

import asyncio
import bisect
import contextlib
import dataclasses
import logging
import random
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from wukong.runtime._client import Client, Object
from wukong.runtime._errors import ApiError, NotFound
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
# The shard space a Lease belongs to: how many shards, keyed by what.
COUNT_LABEL = "shards.wukong.io/count"
BY_LABEL = "shards.wukong.io/by"
UNSHARDED = "unsharded"

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

    def __str__(self) -> str:
        return f"{self.count} shards by {self.key}"

    @property
    def labels(self) -> tuple[tuple[str, str], ...]:
        """What its Leases record of it."""
        return ((COUNT_LABEL, str(self.count)), (BY_LABEL, self.key))

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


def space_of(lease: Object, *, group: str) -> str:
    """The shard space `lease` records: "12 shards by namespace", `UNSHARDED` for the
    single leader's Lease (named after the group), "unknown" if it records none."""
    metadata = lease["metadata"]
    if metadata.get("name") == group:
        return UNSHARDED
    labels = metadata.get("labels") or {}
    if COUNT_LABEL not in labels or BY_LABEL not in labels:
        return "unknown"
    return f"{labels[COUNT_LABEL]} shards by {labels[BY_LABEL]}"


class LiveLeases:
    """Which Leases a live replica holds, timed as `LeaderElector` times a holder: on
    this replica's monotonic clock, from when it saw each record change (first seen:
    live), so other machines' clocks never count."""

    def __init__(self, identity: str, default_duration: float) -> None:
        self._identity = identity
        self._default_duration = default_duration
        self._seen: dict[str, tuple[object, float]] = {}  # name: (record, changed at)

    def live(self, leases: list[Object]) -> list[Object]:
        """Those of `leases` held by a live holder (this replica's own always are);
        forgets Leases not in `leases`."""
        now = asyncio.get_running_loop().time()
        seen: dict[str, tuple[object, float]] = {}
        alive = []
        for lease in leases:
            name = lease["metadata"]["name"]
            spec = lease.get("spec") or {}
            record = (spec.get("holderIdentity"), spec.get("renewTime"))
            previous = self._seen.get(name)
            changed_at = previous[1] if previous and previous[0] == record else now
            seen[name] = (record, changed_at)
            duration = spec.get("leaseDurationSeconds") or self._default_duration
            if record[0] and (record[0] == self._identity or now < changed_at + duration):
                alive.append(lease)
        self._seen = seen
        return alive


def describe_holders(leases: list[Object], *, group: str) -> str:
    """Each space of `leases` with the replicas holding its Leases, for a log line."""
    holders: dict[str, set[str]] = {}
    for lease in leases:
        holder = (lease.get("spec") or {}).get("holderIdentity") or "?"
        holders.setdefault(space_of(lease, group=group), set()).add(holder)
    return "; ".join(f"{space} held by {', '.join(sorted(h))}" for space, h in holders.items())


class ShardLeaseCheck:
    """A single leader's look at its group's shard Leases after it won its Lease (see
    the module's docstring): a reason not to lead while a live replica holds one,
    else None. For `LeaderElector(guard=...)`."""

    def __init__(
        self, *, client: Client, election: LeaderElectionConfig, observer: RuntimeObserver
    ) -> None:
        self._client = client
        self._config = election
        self._observer = observer
        self._leases = LiveLeases(election.identity, election.lease_duration)

    async def __call__(self) -> str | None:
        try:
            leases = await self._client.list(
                LEASES,
                namespace=self._config.namespace,
                label_selector=f"{GROUP_LABEL}={self._config.name}",
                timeout=self._config.renew_deadline / 2,
            )
        except (ApiError, TimeoutError, OSError) as exc:
            return f"cannot list the shard Leases: {exc}"
        live = self._leases.live([i for i in leases["items"] if _role(i) == "shard"])
        self._observer.space_conflict(bool(live))
        if not live:
            return None
        holders = describe_holders(live, group=self._config.name)
        return f"sharded replicas are live in group {self._config.name}: {holders}"


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
        self._observer = observer
        self._keeping: dict[int, asyncio.Task[None]] = {}
        self._lost: asyncio.Queue[int] = asyncio.Queue()
        self._leases = LiveLeases(election.identity, election.lease_duration)
        self._members = LiveLeases(election.identity, election.lease_duration)
        self.conflict = ""  # the other live shard space, as logged; "" when none
        self._rounds_off = 0  # rounds to sit out after giving a shard back
        self.members_alive = 1
        self._rank = 0  # this replica's place among the members alive, by Lease name
        self._change_lock = asyncio.Lock()

    def _lease_config(self, name: str, role: str) -> LeaderElectionConfig:
        return dataclasses.replace(
            self._config,
            name=name,
            labels=((GROUP_LABEL, self._group), (ROLE_LABEL, role), *self.space.labels),
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
                await self.run_round()
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

    async def _leases_now(self) -> list[Object] | None:
        """The group's Leases and the single leader's (named after the group), or None
        if they cannot be read."""
        try:
            leases = await self._client.list(
                LEASES,
                namespace=self._namespace,
                label_selector=f"{GROUP_LABEL}={self._group}",
                timeout=self._config.renew_deadline / 2,
            )
            items: list[Object] = list(leases["items"])
            with contextlib.suppress(NotFound):
                items.append(
                    await self._client.get(
                        LEASES,
                        self._group,
                        namespace=self._namespace,
                        timeout=self._config.renew_deadline / 2,
                    )
                )
        except (ApiError, TimeoutError, OSError) as exc:
            _log.warning("cannot list the shard Leases: %s", exc)
            return None
        return items

    def _other_space(self, leases: list[Object]) -> list[Object]:
        """The live Leases of another space that hold a shard or the single leader's."""
        ours = str(self.space)
        return [
            lease
            for lease in self._leases.live(leases)
            if _role(lease) != "member" and space_of(lease, group=self._group) != ours
        ]

    def _report(self, others: list[Object]) -> None:
        conflict = describe_holders(others, group=self._group) if others else ""
        if conflict == self.conflict:
            return
        if conflict:
            _log.warning(
                "another shard space is live in group %s: %s; this replica (%s) holds no shard "
                "and reconciles nothing until those Leases are released or expire",
                self._group,
                conflict,
                self.space,
            )
        else:
            _log.info("no other shard space is live in group %s: taking shards", self._group)
        self.conflict = conflict
        self._observer.space_conflict(bool(conflict))

    async def run_round(self) -> None:
        """One round of `run`: read the group's Leases, then take or give back shards
        towards this replica's share, or (holding none) wait while another shard space
        is live. For a caller that paces the rounds itself; `run` is this in a loop,
        with this replica's member Lease kept (without it, others leave it out of
        their shares)."""
        leases = await self._leases_now()
        if leases is None:
            return
        ours = str(self.space)
        self._count_members(
            [i for i in leases if _role(i) == "member" and space_of(i, group=self._group) == ours]
        )
        for lease in leases:
            if _role(lease) == "shard":
                for elector in self._electors:
                    elector.observe(lease)
        others = self._other_space(leases)
        if not self.held:
            # Holding shards, this replica's flags keep other spaces out; holding
            # none, it must not start while another space is live.
            self._report(others)
            if others or self._rounds_off:
                self._rounds_off = max(0, self._rounds_off - 1)
                return
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
            if shard in held or self._taken(leases, shard):
                continue
            if await self._electors[shard].try_acquire():
                if not held and not await self._alone(shard):
                    return
                held.add(shard)
                self._keeping[shard] = asyncio.create_task(
                    self._keep(shard), name=f"shard {shard} lease"
                )
                await self._change(frozenset({shard}), frozenset(), "acquired")

    async def _alone(self, shard: int) -> bool:
        """After winning `shard` while holding nothing: look again (the write came
        first), and give it back if another space is live after all."""
        leases = await self._leases_now()
        if leases is not None:
            others = self._other_space(leases)
            if not others:
                return True
            self._report(others)
        await self._electors[shard].release()
        # Two spaces that raced give their shards back; sit out a random number
        # of rounds so the next race has a winner.
        self._rounds_off = random.randint(1, 3)
        return False

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
        alive = [lease["metadata"]["name"] for lease in self._members.live(members)]
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
