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
   a warning in the log); nothing is served on doubt.
The serving process's own identity needs `create` on tokenreviews and
subjectaccessreviews (the chart's metrics-auth ClusterRole).

Cost. A review's two calls share one deadline, `REVIEW_TIMEOUT`, shorter than
a scrape's usual timeout (10 s), so a slow API server gives the scraper a 500
rather than a scrape that hangs. Answers are remembered per (token, verb,
path): allowed ones for `ALLOW_TTL`, refusals for `DENY_TTL` (shorter, so a
reader granted just now gets in soon), at most `MAX_ENTRIES` of them (a flood
of made-up tokens evicts the oldest, it cannot grow the memory); so a scraper
costs the API server two calls every half minute, not two per scrape. Failed
reviews are not remembered. Tokens are kept only as SHA-256 digests.
"""

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from wukong.runtime._client import Client, Object
from wukong.runtime._errors import ApiError, ApiTimeout
from wukong.runtime._httpserver import Handler
from wukong.runtime.resources import SUBJECT_ACCESS_REVIEWS, TOKEN_REVIEWS, Resource

log = logging.getLogger("wukong.runtime.delegatedauth")

REVIEW_TIMEOUT = 5.0
ALLOW_TTL = 30.0
DENY_TTL = 10.0
MAX_ENTRIES = 1024


@dataclass(frozen=True)
class Decision:
    """The answer for one request: `status` 200 (serve it), 401 or 403, and why."""

    status: int
    user: str  # the authenticated user's name; "" when there is none
    message: str

    @property
    def allowed(self) -> bool:
        return self.status == 200


_Key = tuple[bytes, str, str]  # (SHA-256 of the token, verb, path)


class DecisionCache:
    """Decisions until they expire (`ALLOW_TTL`, `DENY_TTL`), at most `max_entries`."""

    def __init__(self, *, max_entries: int = MAX_ENTRIES) -> None:
        self._max_entries = max_entries
        self._entries: dict[_Key, tuple[float, Decision]] = {}  # insertion order: oldest first

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: _Key, *, now: float) -> Decision | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, decision = entry
        if now >= expires:
            del self._entries[key]
            return None
        return decision

    def put(self, key: _Key, decision: Decision, *, now: float) -> None:
        self._entries.pop(key, None)
        if len(self._entries) >= self._max_entries:
            for stale in [k for k, (expires, _) in self._entries.items() if expires <= now]:
                del self._entries[stale]
            while len(self._entries) >= self._max_entries:
                del self._entries[next(iter(self._entries))]
        ttl = ALLOW_TTL if decision.allowed else DENY_TTL
        self._entries[key] = (now + ttl, decision)


def bearer_token(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, as the API server reads it."""
    parts = authorization.strip().split(" ", 2)
    if len(parts) < 2 or parts[0].lower() != "bearer" or not parts[1]:
        return None
    return parts[1]


class DelegatedAuth:
    """Asks the API server, through `client`, whether a request's caller may make it."""

    def __init__(self, *, client: Client) -> None:
        self._client = client
        self._cache = DecisionCache()

    def protect(self, handler: Handler) -> Handler:
        """`handler`, answered only for callers the API server lets in."""

        async def protected(request: web.Request) -> web.StreamResponse:
            token = bearer_token(request.headers.get("Authorization", ""))
            verb, path = request.method.lower(), request.path
            try:
                decision = await self.review(token, verb=verb, path=path)
            except (ApiError, ApiTimeout, aiohttp.ClientError, OSError) as exc:
                log.warning("cannot review a request for %s %s: %s", verb, path, exc)
                return web.Response(status=500, text=f"cannot review the request: {exc}\n")
            if not decision.allowed:
                log.debug("%s %s refused (%d): %s", verb, path, decision.status, decision.message)
                return web.Response(status=decision.status, text=decision.message + "\n")
            return await handler(request)

        return protected

    async def review(self, token: str | None, *, verb: str, path: str) -> Decision:
        """The decision for a caller with `token` asking `verb` on `path`."""
        if token is None:
            return Decision(401, "", "Unauthorized: no bearer token")
        key = (hashlib.sha256(token.encode()).digest(), verb, path)
        loop = asyncio.get_running_loop()
        cached = self._cache.get(key, now=loop.time())
        if cached is not None:
            return cached
        client = self._client.with_deadline(loop.time() + REVIEW_TIMEOUT)
        decision = await _review(client, token, verb=verb, path=path)
        self._cache.put(key, decision, now=loop.time())
        return decision


async def _review(client: Client, token: str, *, verb: str, path: str) -> Decision:
    tokens = await client.create(TOKEN_REVIEWS, _review_body(TOKEN_REVIEWS, {"token": token}))
    authenticated = tokens.get("status") or {}
    if not authenticated.get("authenticated"):
        why = authenticated.get("error") or "token not accepted"
        return Decision(401, "", f"Unauthorized: {why}")
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
        return Decision(403, name, f"Forbidden: user {name} may not {verb} {path}: {why}")
    return Decision(200, name, "")


def _review_body(resource: Resource, spec: Object) -> Object:
    return {"apiVersion": resource.api_version, "kind": resource.kind, "spec": spec}
