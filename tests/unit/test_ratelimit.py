"""Rate limiters: per-key exponential backoff, the overall bucket, and their max."""

import pytest

from wukong.runtime.ratelimit import (
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


def test_bucket_allows_burst_then_spaces_requests_at_qps() -> None:
    limiter = BucketRateLimiter(qps=10.0, burst=100)
    burst = [limiter.when(f"key-{i}") for i in range(100)]
    assert burst == [0.0] * 100
    # The 101st token is 1/qps away (minus whatever refilled while this test ran).
    wait = limiter.when("key-100")
    assert 0.05 < wait <= 0.1
    # Reservations stack: the next one waits about one more interval.
    following = limiter.when("key-101")
    assert 0.15 < following <= 0.2
    assert following > wait
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
        BucketRateLimiter(qps=10.0, burst=1),
    )
    assert limiter.when("a") == pytest.approx(0.001)  # bucket has a token: backoff wins
    wait = limiter.when("b")  # bucket is empty: ~0.1 s beats b's 1 ms backoff
    assert 0.05 < wait <= 0.1
    assert limiter.num_requeues("b") == 1


def test_default_controller_rate_limiter() -> None:
    limiter = default_controller_rate_limiter()
    assert [limiter.when("a") for _ in range(3)] == pytest.approx([0.005, 0.01, 0.02])
    assert limiter.num_requeues("a") == 3
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
