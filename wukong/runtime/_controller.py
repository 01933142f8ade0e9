"""A controller's configuration: what it reconciles, what it watches, how.

Observe / queue / act, as in controller-runtime:

- Observe: informers for the primary kind, for kinds it *owns* (events map to
  the owner named by a controller ownerReference) and for other *watched*
  kinds (a map function returns the requests, often through a cache index).
- Queue: a work queue deduplicates keys, never gives one key to two workers,
  delays retries (rate limiter) and `RequeueAfter`s, and serves namespaces
  round-robin so that one namespace's backlog cannot starve the others.
- Act: `max_concurrent_reconciles` workers each take a key and run one
  reconcile as its own task under a deadline (see `context`).

A `Controller` is only configuration: build one and hand it to
`Manager.add`, which creates its running state (queue, workers, reconciles
in flight; `_running.RunningController`) wired to the manager's informers and
observers. How a reconcile ends, and what follows:

| ends with                        | outcome        | then                           |
| -------------------------------- | -------------- | ------------------------------ |
| `Result()`                       | success        | forget backoff                 |
| `Result(requeue_after=s)`        | requeue_after  | forget backoff, add after `s`  |
| `Result(requeue=True)`           | requeue        | add rate-limited               |
| an exception                     | error          | add rate-limited, log ERROR    |
| cancelled (any `CancelReason`)   | cancelled      | add rate-limited, log DEBUG    |
| `ApiTimeout` raised              | cancelled      | same, reason `api_timeout`     |
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from wukong.runtime._client import Object
from wukong.runtime._context import ReconcileContext, Request, Result
from wukong.runtime._ratelimit import RateLimiter
from wukong.runtime.resources import Resource

MapFunc = Callable[[Object], Iterable[Request]]
"""Maps a watched object to the requests it should start (`Watch.map_to`)."""


class Reconciler(Protocol):
    """Drives one object toward its spec. Called with a fresh context per reconcile."""

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result: ...


@dataclass(frozen=True)
class Watch:
    """Reconcile primaries returned by `map_func` whenever a `resource` object changes."""

    resource: Resource
    map_func: MapFunc


@dataclass(frozen=True, kw_only=True)
class ControllerOptions:
    """How a controller runs its reconciles."""

    max_concurrent_reconciles: int = 1
    # None: the manager's default (`--reconcile-timeout`, 15 s unless set).
    reconcile_timeout: float | None = None
    # How long a cancelled reconcile may take to unwind before it is reported stuck.
    cancel_grace: float = 5.0
    rate_limiter: RateLimiter | None = None
    # The share of the time left to its deadline that one API call (one attempt)
    # may take: a hung call times out as `api_timeout` and is retried (if
    # idempotent) or reported while the reconcile still has time. 1.0: the
    # whole deadline, so only `deadline_exceeded` can cut a call.
    call_budget_share: float = 0.5
    # Backoff for a reconcile that was cancelled (timed out, shut down) is capped
    # here, not at the rate limiter's 1000 s: a cancellation says nothing about
    # the object, so it should be retried soon.
    cancelled_backoff_cap: float = 30.0
    # Serve namespaces round-robin from the queue (see _workqueue): one
    # namespace's backlog delays another's key by at most one reconcile per
    # busy namespace. False: one FIFO for all, as in controller-runtime.
    fair_namespaces: bool = True
    # At most this many reconciles of one namespace at once while another
    # namespace has work waiting (None: up to max_concurrent_reconciles), so a
    # namespace of slow reconciles cannot hold every worker from the others;
    # alone with work it may use them all. Needs fair_namespaces.
    max_concurrent_reconciles_per_namespace: int | None = None

    def __post_init__(self) -> None:
        if self.max_concurrent_reconciles < 1:
            raise ValueError("max_concurrent_reconciles must be at least 1")
        if self.reconcile_timeout is not None and self.reconcile_timeout <= 0:
            raise ValueError("reconcile_timeout must be positive")
        if not 0 < self.call_budget_share <= 1:
            raise ValueError("call_budget_share must be in (0, 1]")
        if self.cancelled_backoff_cap <= 0:
            raise ValueError("cancelled_backoff_cap must be positive")
        per_namespace = self.max_concurrent_reconciles_per_namespace
        if per_namespace is not None:
            if per_namespace < 1:
                raise ValueError("max_concurrent_reconciles_per_namespace must be at least 1")
            if not self.fair_namespaces:
                raise ValueError("max_concurrent_reconciles_per_namespace needs fair_namespaces")


@dataclass(frozen=True, kw_only=True)
class Controller:
    """Reconciles one primary kind. Register it with `Manager.add`, which runs it."""

    name: str
    reconciler: Reconciler
    primary: Resource
    owns: Sequence[Resource] = ()
    watches: Sequence[Watch] = ()
    options: ControllerOptions = field(default_factory=ControllerOptions)
