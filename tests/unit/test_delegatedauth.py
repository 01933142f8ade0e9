"""The review cache and header parsing of `delegatedauth` (the reviews themselves are
tested against a real API server in tests/integration/test_metrics_auth.py)."""

import pytest

from wukong.runtime._delegatedauth import (
    ALLOW_TTL,
    DENY_TTL,
    Decision,
    DecisionCache,
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


def test_allowed_decisions_are_kept_longer_than_refusals() -> None:
    cache = DecisionCache()
    cache.put(_key(1), ALLOWED, now=100.0)
    cache.put(_key(2), DENIED, now=100.0)
    assert DENY_TTL < ALLOW_TTL
    assert cache.get(_key(2), now=100.0 + DENY_TTL - 0.01) == DENIED
    assert cache.get(_key(2), now=100.0 + DENY_TTL) is None
    assert cache.get(_key(1), now=100.0 + DENY_TTL) == ALLOWED
    assert cache.get(_key(1), now=100.0 + ALLOW_TTL) is None
    assert len(cache) == 0  # what expired is dropped when read


def test_the_cache_is_bounded_dropping_the_expired_then_the_oldest() -> None:
    cache = DecisionCache(max_entries=3)
    cache.put(_key(1), DENIED, now=0.0)
    cache.put(_key(2), ALLOWED, now=1.0)
    cache.put(_key(3), ALLOWED, now=2.0)
    # Full at a time when the refusal has expired: it goes, the others stay.
    cache.put(_key(4), ALLOWED, now=DENY_TTL + 1.0)
    assert len(cache) == 3
    assert [cache.get(_key(n), now=DENY_TTL + 1.0) for n in (2, 3, 4)] == [ALLOWED] * 3
    # Full with nothing expired: the oldest goes.
    cache.put(_key(5), ALLOWED, now=DENY_TTL + 2.0)
    assert len(cache) == 3
    assert cache.get(_key(2), now=DENY_TTL + 2.0) is None
    assert cache.get(_key(5), now=DENY_TTL + 2.0) == ALLOWED
