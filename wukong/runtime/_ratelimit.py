"""Rate limiters for the work queue, after client-go's `util/workqueue`.

A rate limiter answers one question for `WorkQueue.add_rate_limited`: how long
should this key wait before it is retried? `when(key)` both answers and counts
the attempt; `forget(key)` clears the key's history once it has succeeded;
`num_requeues(key)` says how many attempts are on record.

- `ItemExponentialFailureRateLimiter`: per key, `base_delay * 2**failures`,
  capped at `max_delay`. One flapping object backs off on its own; the others
  are unaffected.
- `BucketRateLimiter`: one token bucket for all keys (golang.org/x/time/rate
  reservations): `burst` retries go through at once, then `qps` per second.
  It bounds the *total* retry rate, so a mass failure (the API server restarts
  and every reconcile errors) does not turn into a retry storm.
- `MaxOfRateLimiter`: the strictest of several limiters.

`default_controller_rate_limiter()` is controller-runtime's default: per-key
exponential backoff from 5 ms to 1000 s, and no more than 10 retries per second
overall after a burst of 100.

Delays are relative, so no clock is shared with the queue; the bucket reads
`time.monotonic()` unless given another clock.

Limiters are not thread-safe: they are used from one event loop.
"""

import math
import time
from collections.abc import Callable, Hashable
from typing import Protocol


class RateLimiter(Protocol):
    def when(self, key: Hashable) -> float:
        """Seconds `key` should wait before its next attempt; counts the attempt."""
        ...

    def forget(self, key: Hashable) -> None:
        """Stop tracking `key` (it succeeded): its next failure starts afresh."""
        ...

    def num_requeues(self, key: Hashable) -> int:
        """How many attempts of `key` are on record."""
        ...


class ItemExponentialFailureRateLimiter:
    """Per-key exponential backoff: `base_delay`, then doubled per failure, up to `max_delay`."""

    def __init__(self, *, base_delay: float = 0.005, max_delay: float = 1000.0) -> None:
        if base_delay < 0 or max_delay < 0:
            raise ValueError("delays must not be negative")
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._failures: dict[Hashable, int] = {}

    def when(self, key: Hashable) -> float:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        try:
            # ldexp is exact for powers of two; it overflows after ~1024 failures.
            delay = math.ldexp(self.base_delay, failures)
        except OverflowError:
            return self.max_delay
        return min(delay, self.max_delay)

    def forget(self, key: Hashable) -> None:
        self._failures.pop(key, None)

    def num_requeues(self, key: Hashable) -> int:
        return self._failures.get(key, 0)


class BucketRateLimiter:
    """An overall token bucket: `burst` tokens, refilled at `qps` per second; keys are ignored.

    Like golang.org/x/time/rate's `Reserve`, a call always takes a token, even
    one that will only exist in the future, and returns how long until it does.
    So the tokens of a burst of retries are handed out in order, `1/qps` apart.
    """

    def __init__(
        self, *, qps: float = 10.0, burst: int = 100, clock: Callable[[], float] = time.monotonic
    ) -> None:
        # `clock` as in client-go's rate-limited queues (clock.Clock): tests pass a fake one.
        if qps <= 0:
            raise ValueError("qps must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def when(self, key: Hashable) -> float:
        now = self._clock()
        tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
        # Reserve the token even if it goes negative: the debt is what later
        # callers wait behind.
        tokens -= 1.0
        self._tokens = tokens
        self._last = now
        return -tokens / self.qps if tokens < 0 else 0.0

    def forget(self, key: Hashable) -> None:
        pass

    def num_requeues(self, key: Hashable) -> int:
        return 0


class MaxOfRateLimiter:
    """The longest wait of several limiters; `forget` forgets in all of them."""

    def __init__(self, *limiters: RateLimiter) -> None:
        self.limiters = limiters

    def when(self, key: Hashable) -> float:
        # Every limiter must see the attempt (each counts it), so no short-circuit.
        return max((limiter.when(key) for limiter in self.limiters), default=0.0)

    def forget(self, key: Hashable) -> None:
        for limiter in self.limiters:
            limiter.forget(key)

    def num_requeues(self, key: Hashable) -> int:
        return max((limiter.num_requeues(key) for limiter in self.limiters), default=0)


def default_controller_rate_limiter() -> MaxOfRateLimiter:
    """controller-runtime's default: exponential 5 ms .. 1000 s per key, 10 qps (burst 100)."""
    return MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(base_delay=0.005, max_delay=1000.0),
        BucketRateLimiter(qps=10.0, burst=100),
    )
