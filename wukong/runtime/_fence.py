"""The write fence: no write leaves a replica that no longer leads.

Leader election only promises that a new leader waits out the old one's
lease; it cannot stop the old one's code. A reconcile cancelled on lease loss
may swallow its cancellation, or a write may simply be next in line. So the
manager gives its controllers a client behind this fence and closes it the
moment leadership is lost, before anything else: from then on every create,
update, patch or delete of this process raises `NotLeading` instead of being
sent, while reads (the cache, health, metrics) go on. A standby replica opens
it again when it wins the lease back.
"""


class WriteFence:
    """Open while this replica may write; `close(lease)` refuses every later write."""

    def __init__(self) -> None:
        self.closed_for: str | None = None  # the lease whose loss closed it

    @property
    def closed(self) -> bool:
        return self.closed_for is not None

    def close(self, lease: str) -> None:
        self.closed_for = lease

    def open(self) -> None:
        self.closed_for = None
