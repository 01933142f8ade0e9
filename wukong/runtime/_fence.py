"""The write fence: no write leaves a replica that no longer leads.

Leader election only promises that a new leader waits out the old one's
lease; it cannot stop the old one's code. A reconcile cancelled on lease loss
may swallow its cancellation, or a write may simply be next in line. So the
manager gives its controllers a client behind this fence and closes it the
moment leadership is lost, before anything else: from then on every create,
update, patch or delete of this process raises `NotLeading` instead of being
sent, while reads (the cache, health, metrics) go on. A standby replica opens
it again when it wins the lease back.

With shards (`_shards`) the fence is per shard: a write to a namespace whose
shard this replica does not hold right now is refused the same way, naming
that shard's Lease. The holder drops a shard from what it holds before it
tells anyone the shard is gone, so no write slips through a handoff.
"""

from collections.abc import Callable

# The Lease of the shard a write to this namespace belongs to, if this replica
# does not hold it; None if the write may go.
ShardCheck = Callable[[str | None], str | None]


class WriteFence:
    """Open while this replica may write; `close(lease)` refuses every later write."""

    def __init__(self, shards: ShardCheck | None = None) -> None:
        self.closed_for: str | None = None  # the lease whose loss closed it
        self.shards = shards

    @property
    def closed(self) -> bool:
        return self.closed_for is not None

    def refuses(self, namespace: str | None) -> str | None:
        """The Lease a write to `namespace` would need and this replica lacks; None: send it."""
        if self.closed_for is not None:
            return self.closed_for
        return None if self.shards is None else self.shards(namespace)

    def close(self, lease: str) -> None:
        self.closed_for = lease

    def open(self) -> None:
        self.closed_for = None
