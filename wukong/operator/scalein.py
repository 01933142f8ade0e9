"""Which members of a WukongSet go when it scales in: never one that is migrating.

A member is migrating while its Wukong's phase is `Migrating` or an
unfinished VirtualMachineInstanceMigration names its instance (the Wukong's
status lags the migration by a reconcile; the migration object does not).
Removing it would kill a guest in the middle of its move, so it is never a
candidate. Among the others (`ScaleInOrder.NOT_READY_THEN_NEWEST`): members
that are not Ready first (they serve nothing), then the newest, that is the
highest ordinal. The ordinal, not the creationTimestamp, says which is newest:
it is what a person sees in the names, it has no one-second ties, and since
scale-out fills the lowest free ordinals, removing the highest keeps the
names `<set>-0` to `<set>-(n-1)`.

When fewer members can go than must, those that can go, go; the migrating
ones that held the rest back are named (`ScaleIn.blocked_by`) and the set
finishes scaling in when their migrations end.
"""

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Member:
    """A member as the set's decisions (scale-in, rollout) see it."""

    name: str
    ordinal: int
    uid: str
    ready: bool
    # Why it is migrating (e.g. "migration web-1-mig Running"), None when it is not.
    migrating: str | None = None
    # Ready, and its status caught up with its spec (`wukongset_rollout`).
    available: bool = False
    # Why it differs from the set's template, None when it does not.
    outdated: str | None = None


@dataclass(frozen=True)
class ScaleIn:
    """The members to remove (in the order they were chosen) and those skipped."""

    remove: tuple[Member, ...]
    # Every migrating member: none of them may go.
    skipped: tuple[Member, ...]
    # How many more should go than can (0 when the scale-in is complete).
    short_by: int

    @property
    def blocked_by(self) -> tuple[Member, ...]:
        """The migrating members that keep the set above its replicas."""
        return self.skipped if self.short_by else ()


def removal_order(members: Iterable[Member]) -> list[Member]:
    """Members that may go, in the order they go: not Ready first, then newest."""
    candidates = [m for m in members if m.migrating is None]
    return sorted(candidates, key=lambda m: (m.ready, -m.ordinal))


def choose_scale_in(members: Iterable[Member], count: int) -> ScaleIn:
    """The `count` members to remove, or as many as may go."""
    members = list(members)
    remove = removal_order(members)[: max(count, 0)]
    skipped = sorted((m for m in members if m.migrating is not None), key=lambda m: m.ordinal)
    return ScaleIn(
        remove=tuple(remove), skipped=tuple(skipped), short_by=max(count, 0) - len(remove)
    )
