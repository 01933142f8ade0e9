"""Callers of an HTTP endpoint, authenticated and authorized by the API server.

What controller-runtime's metrics filter does (`filters.WithAuthenticationAndAuthorization`,
which kubebuilder scaffolds turn on with `--metrics-secure`), for any handler
of an `HttpServer`:

1. the caller's bearer token (`Authorization: Bearer <token>`) goes to the API
   server in a TokenReview; no token, or one it does not accept: 401;
2. the user the review names (name, uid, groups, extra) is checked with a
   SubjectAccessReview of the request as a non-resource URL: the lowercased
   HTTP method as verb, the path as path (`get` on `/metrics`); not allowed:
   403. So a scraper's ServiceAccount needs a ClusterRole rule
   `nonResourceURLs: ["/metrics"], verbs: ["get"]` (the chart's metrics-reader);
3. when the API server does not answer in time, or answers an error: 500 (and
   a warning in the log, once per review); nothing is served on doubt.
Bodies are generic ("Unauthorized", "Forbidden", ...): never the token, the
user or the API server's words; the reasons go to the DEBUG log.
The serving process's own identity needs `create` on tokenreviews and
subjectaccessreviews (the chart's metrics-auth ClusterRole).

Cost, and abuse. A review's two calls share one deadline, `REVIEW_TIMEOUT`,
shorter than a scrape's usual timeout (10 s), so a slow API server gives the
scraper a 500 rather than a scrape that hangs. Answers are remembered per
(token, verb, path), tokens only as SHA-256 digests, in two caches:
- allowed ones for `ALLOW_TTL`, at most `MAX_ALLOWED`: only tokens the API
  server accepted and authorized get there, so a flood of made-up tokens can
  never evict the scraper's entry; a scraper costs two calls every half minute;
- refusals (401, 403) for `DENY_TTL` (shorter, so a reader granted just now
  gets in soon), at most `MAX_REFUSED`, the oldest evicted first.
Failed reviews (500) are not remembered. Concurrent requests with the same
token share one review (single-flight). Reviews of tokens not allowed
recently draw from a token bucket (`REVIEW_QPS`, `REVIEW_BURST`, refunded
when the token turns out to be accepted): when it is empty they are answered
429 without asking the API server, so made-up tokens cost it at most
`REVIEW_BURST` + `REVIEW_QPS` per second TokenReviews, however many arrive. A
token allowed within `ALLOWED_REMEMBERED` is re-reviewed outside the bucket
when its entry expires: the scraper keeps its 200 through a flood. A new
legitimate caller arriving during one may get 429 until the flood ebbs.
Every request's answer is reported to `on_request(code, via)`: via "cache"
(a remembered answer), "review" (this request's own review), "shared" (another
request's review), "none" (no token, or the bucket was empty).
"""

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from wukong.runtime._calls import bounded
from wukong.runtime._client import Client, Object
from wukong.runtime._errors import ApiError, ApiTimeout
from wukong.runtime._httpserver import Handler
from wukong.runtime.resources import SUBJECT_ACCESS_REVIEWS, TOKEN_REVIEWS, Resource

log = logging.getLogger("wukong.runtime.delegatedauth")

REVIEW_TIMEOUT = 5.0
ALLOW_TTL = 30.0
DENY_TTL = 10.0
MAX_ALLOWED = 256  # distinct (token, verb, path) the API server allowed: real readers only
MAX_REFUSED = 1024
ALLOWED_REMEMBERED = 600.0  # an allowed token's re-review skips the bucket this long
REVIEW_QPS = 5.0
REVIEW_BURST = 20


@dataclass(frozen=True)
class Decision:
    """The answer for one request: `status` 200 (serve it), 401, 403 or 429, and why."""

    status: int
    user: str  # the authenticated user's name; "" when there is none
    message: str  # for the log only: never sent to the caller

    @property
    def allowed(self) -> bool:
        return self.status == 200


_Key = tuple[bytes, str, str]  # (SHA-256 of the token, verb, path)


class DecisionCache:
    """Decisions for `ttl` seconds, at most `max_entries` (the oldest go first); a key is
    also `remembered` for `remember` seconds, as long as there is room."""

    def __init__(self, *, ttl: float, max_entries: int, remember: float = 0.0) -> None:
        self._ttl = ttl
        self._remember = max(ttl, remember)
        self._max_entries = max_entries
        # (fresh until, forgotten at, decision); insertion order: oldest first.
        self._entries: dict[_Key, tuple[float, float, Decision]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: _Key, *, now: float) -> Decision | None:
        """The decision while fresh, else None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        fresh_until, forgotten_at, decision = entry
        if now >= forgotten_at:
            del self._entries[key]
        return decision if now < fresh_until else None

    def remembered(self, key: _Key, *, now: float) -> bool:
        """Whether `key` got a decision less than `remember` seconds ago."""
        entry = self._entries.get(key)
        return entry is not None and now < entry[1]

    def discard(self, key: _Key) -> None:
        self._entries.pop(key, None)

    def put(self, key: _Key, decision: Decision, *, now: float) -> None:
        self._entries.pop(key, None)
        if len(self._entries) >= self._max_entries:
            for gone in [k for k, (_, forgotten, _) in self._entries.items() if forgotten <= now]:
                del self._entries[gone]
            while len(self._entries) >= self._max_entries:
                del self._entries[next(iter(self._entries))]
        self._entries[key] = (now + self._ttl, now + self._remember, decision)


class TokenBucket:
    """`burst` tokens refilled at `qps`; `take` never waits, it says whether one was there.

    golang.org/x/time/rate's `Allow` (the work queue's `BucketRateLimiter` is its
    `Reserve`): a refused caller is answered now, not queued behind a debt.
    """

    def __init__(self, *, qps: float, burst: int) -> None:
        self._qps, self._burst = qps, float(burst)
        self._tokens = float(burst)
        self._last: float | None = None

    def take(self, *, now: float) -> bool:
        self._refill(now)
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def give_back(self, *, now: float) -> None:
        self._refill(now)
        self._tokens = min(self._burst, self._tokens + 1.0)

    def _refill(self, now: float) -> None:
        if self._last is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._qps)
        self._last = now


def bearer_token(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, as the API server reads it."""
    parts = authorization.strip().split(" ", 2)
    if len(parts) < 2 or parts[0].lower() != "bearer" or not parts[1]:
        return None
    return parts[1]


# What a caller reads: the status's phrase, nothing of the token, the user or the API server.
BODIES = {
    401: "Unauthorized\n",
    403: "Forbidden\n",
    429: "Too Many Requests\n",
    500: "Internal Server Error\n",
}
_NO_TOKEN = Decision(401, "", "no bearer token")
_LIMITED = Decision(429, "", "too many reviews of unknown tokens: the review bucket is empty")
_REVIEW_ERRORS = (ApiError, ApiTimeout, aiohttp.ClientError, OSError)


class ReviewFailed(Exception):
    """The API server could not say (an error, or no answer in time): answered 500."""


class DelegatedAuth:
    """Asks the API server, through `client`, whether a request's caller may make it."""

    def __init__(
        self,
        *,
        client: Client,
        review_qps: float = REVIEW_QPS,
        review_burst: int = REVIEW_BURST,
        on_request: Callable[[int, str], None] | None = None,
    ) -> None:
        self._client = client
        self._allowed = DecisionCache(
            ttl=ALLOW_TTL, max_entries=MAX_ALLOWED, remember=ALLOWED_REMEMBERED
        )
        self._refused = DecisionCache(ttl=DENY_TTL, max_entries=MAX_REFUSED)
        self._bucket = TokenBucket(qps=review_qps, burst=review_burst)
        self._in_flight: dict[_Key, asyncio.Task[Decision]] = {}
        self._on_request = on_request

    def protect(self, handler: Handler) -> Handler:
        """`handler`, answered only for callers the API server lets in."""

        async def protected(request: web.Request) -> web.StreamResponse:
            token = bearer_token(request.headers.get("Authorization", ""))
            verb, path = request.method.lower(), request.path
            try:
                decision = await self.review(token, verb=verb, path=path)
            except ReviewFailed:
                return web.Response(status=500, text=BODIES[500])
            if not decision.allowed:
                log.debug("%s %s refused (%d): %s", verb, path, decision.status, decision.message)
                headers = {"Retry-After": "1"} if decision.status == 429 else None
                return web.Response(
                    status=decision.status, text=BODIES[decision.status], headers=headers
                )
            return await handler(request)

        return protected

    async def review(self, token: str | None, *, verb: str, path: str) -> Decision:
        """The decision for a caller with `token` asking `verb` on `path`; `ReviewFailed`
        when the API server cannot say."""
        if token is None:
            return self._answered(_NO_TOKEN, "none")
        key = (hashlib.sha256(token.encode()).digest(), verb, path)
        now = asyncio.get_running_loop().time()
        cached = self._allowed.get(key, now=now) or self._refused.get(key, now=now)
        if cached is not None:
            return self._answered(cached, "cache")
        flight, via = self._in_flight.get(key), "shared"
        if flight is None:
            known = self._allowed.remembered(key, now=now)
            if not known and not self._bucket.take(now=now):
                return self._answered(_LIMITED, "none")
            flight, via = asyncio.create_task(self._review(key, token, charged=not known)), "review"
            self._in_flight[key] = flight
            flight.add_done_callback(lambda done: self._landed(key, done))
        try:
            # Shielded: a caller that goes away does not cancel the review the others wait on.
            decision = await asyncio.shield(flight)
        except ReviewFailed:
            self._report(500, via)
            raise
        return self._answered(decision, via)

    async def _review(self, key: _Key, token: str, *, charged: bool) -> Decision:
        _, verb, path = key
        loop = asyncio.get_running_loop()
        client = bounded(self._client, loop.time() + REVIEW_TIMEOUT)
        try:
            decision = await _review(client, token, verb=verb, path=path)
        except _REVIEW_ERRORS as exc:
            # Logged here, once per review, not once per request waiting on it.
            log.warning("cannot review a request for %s %s: %s", verb, path, exc)
            raise ReviewFailed(str(exc)) from exc
        now = loop.time()
        if charged and decision.status != 401:
            self._bucket.give_back(now=now)  # a token the API server knows is not a flood
        if decision.allowed:
            self._allowed.put(key, decision, now=now)
        else:
            self._allowed.discard(key)  # no longer a known reader: back behind the bucket
            self._refused.put(key, decision, now=now)
        return decision

    def _landed(self, key: _Key, flight: "asyncio.Task[Decision]") -> None:
        self._in_flight.pop(key, None)
        if not flight.cancelled():
            flight.exception()  # read: with every caller gone, asyncio would log it at ERROR

    def _answered(self, decision: Decision, via: str) -> Decision:
        self._report(decision.status, via)
        return decision

    def _report(self, code: int, via: str) -> None:
        if self._on_request is not None:
            self._on_request(code, via)


async def _review(client: Client, token: str, *, verb: str, path: str) -> Decision:
    tokens = await client.create(TOKEN_REVIEWS, _review_body(TOKEN_REVIEWS, {"token": token}))
    authenticated = tokens.get("status") or {}
    if not authenticated.get("authenticated"):
        why = authenticated.get("error") or "token not accepted"
        return Decision(401, "", f"not authenticated: {why}")
    user: Object = authenticated.get("user") or {}
    name = str(user.get("username", ""))
    spec: dict[str, Any] = {
        "user": name,
        "groups": list(user.get("groups") or []),
        "nonResourceAttributes": {"path": path, "verb": verb},
    }
    if user.get("uid"):
        spec["uid"] = user["uid"]
    if user.get("extra"):
        spec["extra"] = user["extra"]
    access = await client.create(SUBJECT_ACCESS_REVIEWS, _review_body(SUBJECT_ACCESS_REVIEWS, spec))
    allowed = access.get("status") or {}
    if not allowed.get("allowed"):
        why = allowed.get("reason") or f"no RBAC rule allows {verb} on {path}"
        return Decision(403, name, f"user {name} may not {verb} {path}: {why}")
    return Decision(200, name, "")


def _review_body(resource: Resource, spec: Object) -> Object:
    return {"apiVersion": resource.api_version, "kind": resource.kind, "spec": spec}
