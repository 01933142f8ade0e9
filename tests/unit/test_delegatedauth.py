"""The review caches, the review bucket and header parsing of `delegatedauth` (the reviews
themselves, single-flight and the flood, are tested against a real API server in
tests/integration/test_metrics_auth.py and tests/integration/hostile/test_metrics_abuse.py)."""

import pytest

from wukong.runtime._delegatedauth import (
    ALLOW_TTL,
    DENY_TTL,
    Decision,
    DecisionCache,
    TokenBucket,
    bearer_token,
)

ALLOWED = Decision(200, "system:serviceaccount:m:prometheus", "")
DENIED = Decision(403, "system:serviceaccount:m:intruder", "Forbidden")


def _key(n: int) -> tuple[bytes, str, str]:
    return (n.to_bytes(32, "big"), "get", "/metrics")


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.def", "abc.def"),
        ("bearer abc", "abc"),
        ("  Bearer abc  ", "abc"),
        ("Bearer abc extra", "abc"),
        ("Bearer ", None),
        ("Bearer", None),
        ("Basic dXNlcjpwYXNz", None),
        ("", None),
    ],
)
def test_the_bearer_token_is_read_as_the_api_server_reads_it(
    header: str, token: str | None
) -> None:
    assert bearer_token(header) == token


def test_decisions_expire_and_keys_are_remembered_longer() -> None:
    assert DENY_TTL < ALLOW_TTL
    cache = DecisionCache(ttl=ALLOW_TTL, max_entries=8, remember=600.0)
    cache.put(_key(1), ALLOWED, now=100.0)
    assert cache.get(_key(1), now=100.0 + ALLOW_TTL - 0.01) == ALLOWED
    assert cache.get(_key(1), now=100.0 + ALLOW_TTL) is None
    assert cache.remembered(_key(1), now=100.0 + ALLOW_TTL)  # re-reviewed outside the bucket
    assert not cache.remembered(_key(2), now=100.0)
    assert cache.get(_key(1), now=700.0) is None
    assert not cache.remembered(_key(1), now=700.0)
    assert len(cache) == 0  # what is forgotten is dropped when read
    cache.put(_key(1), ALLOWED, now=800.0)
    cache.discard(_key(1))
    assert not cache.remembered(_key(1), now=800.0)


def test_the_cache_is_bounded_dropping_the_forgotten_then_the_oldest() -> None:
    cache = DecisionCache(ttl=DENY_TTL, max_entries=3)
    cache.put(_key(1), DENIED, now=0.0)
    cache.put(_key(2), DENIED, now=1.0)
    cache.put(_key(3), DENIED, now=2.0)
    # Full at a time when the first has expired: it goes, the others stay.
    cache.put(_key(4), DENIED, now=DENY_TTL + 0.5)
    assert len(cache) == 3
    assert [cache.get(_key(n), now=DENY_TTL + 0.5) for n in (2, 3, 4)] == [DENIED] * 3
    # Full with nothing expired: the oldest goes.
    cache.put(_key(5), DENIED, now=DENY_TTL + 0.6)
    assert len(cache) == 3
    assert cache.get(_key(2), now=DENY_TTL + 0.6) is None
    assert cache.get(_key(5), now=DENY_TTL + 0.6) == DENIED


def test_the_bucket_allows_a_burst_then_its_rate_and_takes_back_refunds() -> None:
    bucket = TokenBucket(qps=2.0, burst=3)
    assert [bucket.take(now=0.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(now=0.4)  # 0.8 of a token
    assert bucket.take(now=0.5)
    assert not bucket.take(now=0.5)
    bucket.give_back(now=0.5)
    assert bucket.take(now=0.5)
    # Refills never exceed the burst, however long it was idle.
    assert sum(bucket.take(now=100.0) for _ in range(10)) == 3
    bucket.give_back(now=200.0)
    assert sum(bucket.take(now=200.0) for _ in range(10)) == 3
