"""Rate limiters: per-key exponential backoff, the overall bucket, and their max."""

import pytest

from wukong.runtime._ratelimit import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    default_controller_rate_limiter,
)


def test_exponential_backoff_doubles_per_failure_and_is_capped() -> None:
    limiter = ItemExponentialFailureRateLimiter(base_delay=0.005, max_delay=0.1)
    delays = [limiter.when("a") for _ in range(7)]
    assert delays == pytest.approx([0.005, 0.01, 0.02, 0.04, 0.08, 0.1, 0.1])
    assert limiter.num_requeues("a") == 7


def test_exponential_backoff_is_per_key_and_forget_resets() -> None:
    limiter = ItemExponentialFailureRateLimiter(base_delay=0.005, max_delay=1000.0)
    limiter.when("a")
    limiter.when("a")
    assert limiter.when("b") == pytest.approx(0.005)
    assert limiter.num_requeues("a") == 2
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == pytest.approx(0.005)
    assert limiter.num_requeues("b") == 1
    limiter.forget("never-seen")  # no error


def test_exponential_backoff_survives_huge_failure_counts() -> None:
    limiter = ItemExponentialFailureRateLimiter(base_delay=0.005, max_delay=1000.0)
    for _ in range(2000):  # 2**2000 overflows a float
        delay = limiter.when("a")
    assert delay == 1000.0


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_burst_then_spaces_requests_at_qps() -> None:
    clock = FakeClock()
    limiter = BucketRateLimiter(qps=10.0, burst=100, clock=clock)
    burst = [limiter.when(f"key-{i}") for i in range(100)]
    assert burst == [0.0] * 100
    # The 101st token is 1/qps away.
    assert limiter.when("key-100") == pytest.approx(0.1)
    # Reservations stack: the next one waits one more interval.
    assert limiter.when("key-101") == pytest.approx(0.2)
    # Time pays the debt back at qps: 0.3 s later 3 tokens have refilled, two
    # of them owed to the reservations: the next one is free...
    clock.now += 0.3
    assert limiter.when("key-102") == pytest.approx(0.0, abs=1e-9)
    # ...and the one after waits a whole interval again.
    assert limiter.when("key-103") == pytest.approx(0.1)
    # A long pause refills the bucket, but never beyond the burst.
    clock.now += 3600
    assert [limiter.when("k") for _ in range(100)] == [0.0] * 100
    assert limiter.when("k") == pytest.approx(0.1)
    # Keys are ignored: nothing to forget, nothing counted.
    limiter.forget("key-100")
    assert limiter.num_requeues("key-100") == 0


def test_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        BucketRateLimiter(qps=0)
    with pytest.raises(ValueError):
        BucketRateLimiter(burst=0)


def test_max_of_takes_the_longest_wait_and_forgets_everywhere() -> None:
    fast = ItemExponentialFailureRateLimiter(base_delay=0.001, max_delay=1.0)
    slow = ItemExponentialFailureRateLimiter(base_delay=0.05, max_delay=1.0)
    limiter = MaxOfRateLimiter(fast, slow)
    assert limiter.when("a") == pytest.approx(0.05)
    assert limiter.when("a") == pytest.approx(0.1)
    # Both limiters saw both attempts.
    assert fast.num_requeues("a") == slow.num_requeues("a") == limiter.num_requeues("a") == 2
    limiter.forget("a")
    assert fast.num_requeues("a") == slow.num_requeues("a") == 0


def test_max_of_bucket_dominates_once_the_burst_is_spent() -> None:
    limiter = MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(base_delay=0.001, max_delay=1.0),
        BucketRateLimiter(qps=10.0, burst=1, clock=FakeClock()),
    )
    assert limiter.when("a") == pytest.approx(0.001)  # bucket has a token: backoff wins
    # The bucket is empty: its 0.1 s beats b's 1 ms backoff.
    assert limiter.when("b") == pytest.approx(0.1)
    assert limiter.num_requeues("b") == 1


def test_default_controller_rate_limiter() -> None:
    limiter = default_controller_rate_limiter()
    assert [limiter.when("a") for _ in range(3)] == pytest.approx([0.005, 0.01, 0.02])
    assert limiter.num_requeues("a") == 3
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
