"""An async Kubernetes client that speaks plain dicts, bounded by deadlines.

Configuration (kubeconfig, in-cluster service account, exec plugins, token
refresh) and the HTTP transport come from `kubernetes_asyncio`; objects are
plain JSON dicts, because an operator handles custom resources as much as
built-in ones and generated model classes would only get in the way.

Time bounds. A client may carry a *deadline* (`with_deadline`, used by the
reconcile context): every call then gets a share of the time left (the
reconcile's `call_budget_share`, half by default, but at least a quarter of a
second or all that is left), as the HTTP timeout and as
the server's own `?timeout=` (and `timeoutSeconds` for list and watch), so the
API server stops working on a request nobody waits for. A call may also pass
its own `timeout`; the smaller bound wins. A call that runs out of its own time
raises `ApiTimeout` (the `api_timeout` cancel reason), after being retried
while the reconcile still has time if its method is idempotent (GET, PUT,
DELETE: a repeated PUT of a resourceVersion answers Conflict, never a double
write); when the *reconcile* runs out of time its task is cancelled, which
aborts the call in flight (aiohttp closes the connection on cancellation).

Errors. Error answers raise distinct exceptions (`NotFound`, `Conflict`, ... in `wukong.runtime`).
429 answers with `Retry-After` are retried within the time bound, as client-go does.

Observation. Each finished call is reported as an `ApiCall` to the client's
`RuntimeObserver` (the manager's observers: metrics count calls, tracing makes
child spans), together with the reconcile it was made for and, if it ended
early, why (`cancellation.decide_cancel_reason`), so no observer has to
reconstruct either.
"""

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from yarl import URL

from wukong.runtime._cancellation import decide_cancel_reason
from wukong.runtime._errors import ApiError, ApiTimeout, NotLeading, api_error
from wukong.runtime._fanout import NO_OBSERVER
from wukong.runtime._fence import WriteFence
from wukong.runtime._observer import ApiCall, RuntimeObserver
from wukong.runtime.resources import Resource

if TYPE_CHECKING:
    from wukong.runtime._context import ReconcileContext

Object = dict[str, Any]
# Defined here: inside Client, `list` names the verb, not the builtin.
Query = list[tuple[str, str]]
Body = Object | list[Object]

# Extra client-side time for a watch beyond its server-side timeoutSeconds, so
# the server's clean end of the stream arrives before the client gives up.
_WATCH_SLACK_SECONDS = 5.0
_MAX_THROTTLE_RETRIES = 10
_DEADLINE_BACKSTOP_SECONDS = 0.05
# A call's share of the deadline is never less than this (or all that is left):
# slicing a short deadline into tiny attempts would only turn it into timeouts.
_MIN_CALL_SECONDS = 0.25
_MAX_TIMEOUT_RETRIES = 3
_MAX_RETRY_AFTER_SECONDS = 5.0

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


@dataclass(frozen=True)
class WatchEvent:
    """One watch event: ADDED, MODIFIED, DELETED or BOOKMARK, with its object."""

    type: str
    object: Object


@dataclass(frozen=True)
class _Verb:
    name: str
    method: str


class Client:
    """Typed verbs over the Kubernetes REST API. Use as an async context manager."""

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        *,
        observer: RuntimeObserver = NO_OBSERVER,
        deadline: float | None = None,
        reconcile: "ReconcileContext | None" = None,
        fence: WriteFence | None = None,
        call_share: float = 1.0,
    ) -> None:
        self._api = api_client
        self._observer = observer
        self._deadline = deadline  # event-loop time, see with_deadline
        self._reconcile = reconcile  # the reconcile this view makes calls for
        self._fence = fence  # writes are refused once it closes (leadership lost)
        self._call_share = call_share  # of the time left to the deadline, per call

    @classmethod
    async def from_kubeconfig(
        cls,
        path: str | Path | None = None,
        *,
        context: str | None = None,
        user_agent: str | None = None,
    ) -> Self:
        """A client for the kubeconfig at `path` (default: $KUBECONFIG, ~/.kube/config).

        `user_agent` names this process in the API server's audit log and
        metrics (client-go's is "<binary>/<version> (<os>/<arch>) ...").
        """
        configuration = k8s_client.Configuration()
        await k8s_config.load_kube_config(
            config_file=str(path) if path else None,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
        return cls(_api_client(configuration, user_agent))

    @classmethod
    async def from_environment(cls, *, user_agent: str | None = None) -> Self:
        """In a pod: its service account. Elsewhere: $KUBECONFIG or ~/.kube/config."""
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = k8s_client.Configuration()
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return cls(_api_client(configuration, user_agent))
        return await cls.from_kubeconfig(
            os.environ.get("KUBECONFIG") or None, user_agent=user_agent
        )

    @classmethod
    async def configured(
        cls, kubeconfig: str | Path | None = None, *, user_agent: str | None = None
    ) -> Self:
        """The kubeconfig at `kubeconfig` when given (a `--kubeconfig` flag), else
        `from_environment`."""
        if kubeconfig is not None:
            return await cls.from_kubeconfig(kubeconfig, user_agent=user_agent)
        return await cls.from_environment(user_agent=user_agent)

    @property
    def host(self) -> str:
        """host:port of the API server (client-go's `host` metric label)."""
        url = str(self._api.configuration.host or "")
        return urlsplit(url).netloc or url

    def with_deadline(self, deadline: float) -> "Client":
        """A view of this client whose calls end by `deadline` (event-loop time).

        It shares the connection pool; closing it is the original's job.
        """
        return self._view(deadline=deadline)

    def observed_by(self, observer: RuntimeObserver) -> "Client":
        """A view of this client that reports every call to `observer` (the manager's).

        It shares the connection pool; closing it is the original's job.
        """
        return Client(
            self._api,
            observer=observer,
            deadline=self._deadline,
            reconcile=self._reconcile,
            fence=self._fence,
            call_share=self._call_share,
        )

    def _fenced(self, fence: WriteFence) -> "Client":
        """A view whose writes are refused once `fence` closes (the manager's controllers)."""
        return Client(
            self._api,
            observer=self._observer,
            deadline=self._deadline,
            reconcile=self._reconcile,
            fence=fence,
            call_share=self._call_share,
        )

    def _for_reconcile(self, ctx: "ReconcileContext", *, call_share: float) -> "Client":
        """The view a reconcile uses: each call gets `call_share` of the time left to its
        deadline, and is reported as the reconcile's own."""
        return self._view(deadline=ctx.deadline, reconcile=ctx, call_share=call_share)

    def _view(
        self,
        *,
        deadline: float,
        reconcile: "ReconcileContext | None" = None,
        call_share: float | None = None,
    ) -> "Client":
        if self._deadline is not None:
            deadline = min(deadline, self._deadline)
        return Client(
            self._api,
            observer=self._observer,
            deadline=deadline,
            reconcile=reconcile or self._reconcile,
            fence=self._fence,
            call_share=self._call_share if call_share is None else call_share,
        )

    async def close(self) -> None:
        await self._api.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- verbs -------------------------------------------------------------------

    async def get(
        self,
        resource: Resource,
        name: str,
        *,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> Object:
        path = resource.path(namespace=namespace, name=name)
        return await self._call(_GET, resource, namespace, path, timeout=timeout)

    async def list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
        timeout: float | None = None,
    ) -> Object:
        """The list object: `items` plus `metadata.resourceVersion` to watch from.

        With `limit`, one page: `metadata.continue` (when set) asks for the next.
        """
        path = resource.path(namespace=namespace)
        query = _selectors(label_selector, field_selector)
        if limit is not None:
            query.append(("limit", str(limit)))
        if continue_token:
            query.append(("continue", continue_token))
        return await self._call(
            _LIST, resource, namespace, path, query=query, timeout=timeout, server_timeout=True
        )

    async def create(
        self,
        resource: Resource,
        body: Object,
        *,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> Object:
        namespace = namespace or body.get("metadata", {}).get("namespace")
        path = resource.path(namespace=namespace)
        return await self._call(_CREATE, resource, namespace, path, body=body, timeout=timeout)

    async def update(
        self,
        resource: Resource,
        body: Object,
        *,
        subresource: str | None = None,
        timeout: float | None = None,
    ) -> Object:
        """PUT the whole object; `Conflict` if its resourceVersion is stale."""
        metadata = body["metadata"]
        namespace = metadata.get("namespace")
        path = resource.path(namespace=namespace, name=metadata["name"], subresource=subresource)
        return await self._call(_UPDATE, resource, namespace, path, body=body, timeout=timeout)

    async def update_status(
        self, resource: Resource, body: Object, *, timeout: float | None = None
    ) -> Object:
        return await self.update(resource, body, subresource="status", timeout=timeout)

    async def patch(
        self,
        resource: Resource,
        name: str,
        patch: Body,
        *,
        namespace: str | None = None,
        patch_type: str = MERGE_PATCH,
        subresource: str | None = None,
        field_manager: str | None = None,
        force: bool = False,
        timeout: float | None = None,
    ) -> Object:
        """Patch with a merge patch (default), a JSON patch list, or server-side apply.

        Server-side apply (`patch_type=APPLY_PATCH`) needs `field_manager`;
        `force=True` takes over fields owned by other managers.
        """
        path = resource.path(namespace=namespace, name=name, subresource=subresource)
        query: Query = []
        if field_manager:
            query.append(("fieldManager", field_manager))
        if patch_type == APPLY_PATCH:
            if not field_manager:
                raise ValueError("server-side apply needs a field_manager")
            if force:
                query.append(("force", "true"))
        return await self._call(
            _PATCH,
            resource,
            namespace,
            path,
            query=query,
            body=patch,
            content_type=patch_type,
            timeout=timeout,
        )

    async def patch_status(
        self,
        resource: Resource,
        name: str,
        patch: Object,
        *,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> Object:
        return await self.patch(
            resource, name, patch, namespace=namespace, subresource="status", timeout=timeout
        )

    async def apply(
        self,
        resource: Resource,
        body: Object,
        *,
        field_manager: str,
        force: bool = True,
        timeout: float | None = None,
    ) -> Object:
        """Server-side apply of a (partial) object: create it or take over its fields."""
        metadata = body["metadata"]
        return await self.patch(
            resource,
            metadata["name"],
            body,
            namespace=metadata.get("namespace"),
            patch_type=APPLY_PATCH,
            field_manager=field_manager,
            force=force,
            timeout=timeout,
        )

    async def delete(
        self,
        resource: Resource,
        name: str,
        *,
        namespace: str | None = None,
        propagation_policy: str | None = None,
        precondition_uid: str | None = None,
        timeout: float | None = None,
    ) -> Object:
        """Delete `name`. With `precondition_uid`, only the object of that uid: if the
        name now belongs to a replacement, the server refuses with `Conflict`."""
        path = resource.path(namespace=namespace, name=name)
        body: dict[str, Any] = {}
        if propagation_policy:
            body["propagationPolicy"] = propagation_policy
        if precondition_uid:
            body["preconditions"] = {"uid": precondition_uid}
        return await self._call(
            _DELETE, resource, namespace, path, body=body or None, timeout=timeout
        )

    async def watch(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        resource_version: str | None = None,
        timeout_seconds: int = 300,
        inactivity_timeout: float | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        send_initial_events: bool = False,
    ) -> AsyncIterator[WatchEvent]:
        """Stream events until the server ends the watch after `timeout_seconds`.

        `inactivity_timeout` bounds the silence between two events (bookmarks
        included), so a dead connection raises `ApiTimeout` instead of hanging.
        Raises `Gone` when `resource_version` is too old: the caller must list again.

        `send_initial_events` asks for a streaming list (WatchList): the current
        state as ADDED events, then a BOOKMARK annotated
        `k8s.io/initial-events-end`, then changes. Without `resource_version`
        the state is a consistent read, as a list without one would be.
        """
        query = _selectors(label_selector, field_selector)
        query += [("watch", "true"), ("allowWatchBookmarks", "true")]
        if send_initial_events:
            query += [
                ("sendInitialEvents", "true"),
                ("resourceVersionMatch", "NotOlderThan"),
                ("resourceVersion", resource_version or ""),
            ]
        elif resource_version:
            query.append(("resourceVersion", resource_version))
        path = resource.path(namespace=namespace)
        budget = self._budget(timeout_seconds + _WATCH_SLACK_SECONDS)
        assert budget is not None  # a watch always has a timeout
        query.append(("timeoutSeconds", str(max(1, int(budget - _WATCH_SLACK_SECONDS)))))
        response = await self._open(
            _WATCH,
            resource,
            namespace,
            path,
            query=query,
            timeout=aiohttp.ClientTimeout(total=budget, sock_read=inactivity_timeout),
        )
        try:
            async for line in response.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                if event["type"] == "ERROR":
                    status = event["object"]
                    raise api_error(
                        status=int(status.get("code", 500)), body=status, verb="WATCH", path=path
                    )
                yield WatchEvent(event["type"], event["object"])
        except TimeoutError:
            raise ApiTimeout(
                verb="WATCH", path=path, timeout=inactivity_timeout or budget
            ) from None
        finally:
            response.release()

    # -- transport ---------------------------------------------------------------

    def _budget(self, timeout: float | None, *, share: float = 1.0) -> float | None:
        """The time this call may take: its own timeout, capped by `share` of the time left."""
        if self._deadline is None:
            return timeout
        left = self._deadline - asyncio.get_running_loop().time()
        if share >= 1.0 or left <= _MIN_CALL_SECONDS:
            # All that is left, and a little more: the reconcile's own deadline
            # timer fires first and cancels the call, so the cause is recorded
            # as deadline_exceeded; the HTTP timeout is only the backstop.
            allowed = left + _DEADLINE_BACKSTOP_SECONDS
        else:
            allowed = max(left * share, _MIN_CALL_SECONDS)
        return allowed if timeout is None else min(timeout, allowed)

    def _may_retry(self, verb: _Verb, attempt: int) -> bool:
        """Whether a call that timed out may go again: idempotent, and time left for it."""
        if verb.method not in _IDEMPOTENT_METHODS or attempt >= _MAX_TIMEOUT_RETRIES:
            return False
        if self._deadline is None:
            return False
        # Only if the retry gets a budget of its own that ends before the deadline.
        return self._deadline - asyncio.get_running_loop().time() > _MIN_CALL_SECONDS

    async def _call(
        self,
        verb: _Verb,
        resource: Resource,
        namespace: str | None,
        path: str,
        *,
        query: Query | None = None,
        body: Body | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
        server_timeout: bool = False,
    ) -> Object:
        attempt = 0
        while True:
            try:
                return await self._call_once(
                    verb,
                    resource,
                    namespace,
                    path,
                    query=query,
                    body=body,
                    content_type=content_type,
                    timeout=timeout,
                    server_timeout=server_timeout,
                )
            except ApiTimeout as timed_out:
                if timed_out.retry_after is not None or not self._may_retry(verb, attempt):
                    raise
                attempt += 1

    async def _call_once(
        self,
        verb: _Verb,
        resource: Resource,
        namespace: str | None,
        path: str,
        *,
        query: Query | None = None,
        body: Body | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
        server_timeout: bool = False,
    ) -> Object:
        budget = self._budget(timeout, share=self._call_share)
        query = list(query or [])
        if budget is not None and budget > 0:
            # The API server gives up too (and answers 504) instead of working on.
            query.append(("timeout", f"{budget:.3f}s"))
            if server_timeout:
                query.append(("timeoutSeconds", str(max(1, int(budget)))))
        response = await self._open(
            verb,
            resource,
            namespace,
            path,
            query=query,
            body=body,
            content_type=content_type,
            timeout=aiohttp.ClientTimeout(total=budget),
        )
        try:
            result: Object = await response.json()
            return result
        except TimeoutError:
            raise ApiTimeout(verb=verb.name, path=path, timeout=budget) from None
        finally:
            response.release()

    async def _open(
        self,
        verb: _Verb,
        resource: Resource,
        namespace: str | None,
        path: str,
        *,
        query: Query,
        timeout: aiohttp.ClientTimeout,
        body: Body | None = None,
        content_type: str = "application/json",
    ) -> aiohttp.ClientResponse:
        """Send a request; return the response once its status is 2xx, else raise."""
        started_wall, started = time.time(), time.monotonic()
        retries = 0
        status: int | None = None
        error: BaseException | None = None
        try:
            if self._fence is not None and self._fence.closed and verb in _WRITES:
                raise NotLeading(verb=verb.name, path=path, lease=str(self._fence.closed_for))
            if timeout.total is not None and timeout.total <= 0:
                raise ApiTimeout(verb=verb.name, path=path, timeout=0.0)
            retries, response = await self._send_with_retries(
                verb, path, query=query, body=body, content_type=content_type, timeout=timeout
            )
            status = response.status
            if status >= 400:
                failure = await _error_from(response, verb.name, path)
                if status == 504:
                    # The API server gave up at the `?timeout=` we sent: our budget ran out.
                    raise ApiTimeout(
                        verb=verb.name, path=path, timeout=timeout.total, why=failure.message
                    )
                raise failure
            return response
        except ApiTimeout as exc:
            error = exc
            raise
        except TimeoutError:  # aiohttp's own: the HTTP timeout (our budget) passed
            error = ApiTimeout(verb=verb.name, path=path, timeout=timeout.total)
            raise error from None
        except BaseException as exc:  # CancelledError too: report it, then re-raise
            error = exc
            raise
        finally:
            if status is not None or error is not None:
                self._report(
                    verb, resource, namespace, path, status, started_wall, started, retries, error
                )

    async def _send_with_retries(
        self,
        verb: _Verb,
        path: str,
        *,
        query: Query,
        body: Body | None,
        content_type: str,
        timeout: aiohttp.ClientTimeout,
    ) -> tuple[int, aiohttp.ClientResponse]:
        loop = asyncio.get_running_loop()
        deadline = None if timeout.total is None else loop.time() + timeout.total
        for attempt in range(_MAX_THROTTLE_RETRIES + 1):
            remaining = None if deadline is None else max(0.001, deadline - loop.time())
            # _preload_content=False hands back aiohttp's response unread, so
            # watches can stream and error bodies are decoded here, not by the
            # generated client.
            response: aiohttp.ClientResponse = await self._api.call_api(
                path,
                verb.method,
                query_params=query,
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=aiohttp.ClientTimeout(
                    total=remaining, sock_read=timeout.sock_read
                ),
            )
            delay = _retry_after(response)
            if delay is None or attempt == _MAX_THROTTLE_RETRIES:
                return attempt, response
            if deadline is not None and loop.time() + delay >= deadline:
                # The server asked us to come back later than we can wait: the call
                # ran out of time (api_timeout, a normal event), not a server error.
                response.release()
                raise ApiTimeout(
                    verb=verb.name,
                    path=path,
                    timeout=timeout.total,
                    why=f"{response.status} with Retry-After {delay:g}s and no time left to wait",
                    retry_after=delay,
                )
            # Retry-After on a 429 or a 5xx: the server asks us to come back (APF
            # throttling, a watch cache still initialising after a CRD was
            # created, a server shutting down). client-go retries these the same way.
            response.release()
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _report(
        self,
        verb: _Verb,
        resource: Resource,
        namespace: str | None,
        path: str,
        status: int | None,
        started_wall: float,
        started: float,
        retries: int,
        error: BaseException | None,
    ) -> None:
        reconcile = self._reconcile
        duration = time.monotonic() - started
        reason = None
        if error is not None:
            reason = decide_cancel_reason(
                error,
                recorded=reconcile.cancel_reason if reconcile is not None else None,
                deadline_passed=reconcile is not None and reconcile.remaining() <= 0,
            )
        if reason is not None and reconcile is not None:
            # What the reconcile was waiting for when it was cut: its cancel log says so.
            reconcile._note_cut_call(f"{verb.name} {resource.plural} after {duration:.3f}s")
        if self._observer is NO_OBSERVER:
            return
        call = ApiCall(
            verb=verb.name,
            method=verb.method,
            resource=resource.plural,
            host=self.host,
            namespace=namespace,
            path=path,
            status_code=status,
            started=started_wall,
            duration=duration,
            retries=retries,
            error=error,
            cancel_reason=reason,
            reconcile=reconcile,
        )
        self._observer.api_call(call)


_GET = _Verb("get", "GET")
_LIST = _Verb("list", "GET")
_WATCH = _Verb("watch", "GET")
_CREATE = _Verb("create", "POST")
_UPDATE = _Verb("update", "PUT")
_PATCH = _Verb("patch", "PATCH")
_DELETE = _Verb("delete", "DELETE")
_WRITES = frozenset({_CREATE, _UPDATE, _PATCH, _DELETE})
_IDEMPOTENT_METHODS = frozenset({"GET", "PUT", "DELETE"})


def _api_client(
    configuration: k8s_client.Configuration, user_agent: str | None
) -> k8s_client.ApiClient:
    if configuration.proxy is None:
        configuration.proxy = _environment_proxy(str(configuration.host))
    api = k8s_client.ApiClient(configuration=configuration)
    # kubernetes_asyncio's session trusts the environment, so aiohttp looks up
    # proxy variables and ~/.netrc in a worker thread for every request: a thread
    # hop per API call, a large share of a reconcile's CPU. This client talks to
    # one host, whose proxy was resolved once above; tokens and certificates,
    # never netrc, authenticate it.
    api.rest_client.pool_manager._trust_env = False
    if user_agent:
        api.user_agent = user_agent
    return api


def _environment_proxy(host: str) -> str | None:
    """The proxy HTTPS_PROXY/HTTP_PROXY name for `host`, unless NO_PROXY exempts it
    (client-go honours the same variables)."""
    try:
        proxy, _ = get_env_proxy_for_url(URL(host))
    except LookupError:
        return None
    return str(proxy)


async def _error_from(response: aiohttp.ClientResponse, verb: str, path: str) -> ApiError:
    try:
        body = await response.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        body = {"message": (await response.text())[:500]}
    finally:
        response.release()
    return api_error(status=response.status, body=body, verb=verb, path=path)


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    """Seconds to wait before retrying: a 429, or a 5xx that says when; else None."""
    if response.status != 429 and not (
        500 <= response.status < 600 and "Retry-After" in response.headers
    ):
        return None
    try:
        return min(float(response.headers.get("Retry-After", "1")), _MAX_RETRY_AFTER_SECONDS)
    except ValueError:
        return 1.0


def _selectors(label_selector: str | None, field_selector: str | None) -> Query:
    query: Query = []
    if label_selector:
        query.append(("labelSelector", label_selector))
    if field_selector:
        query.append(("fieldSelector", field_selector))
    return query
