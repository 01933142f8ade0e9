"""The client users build: the Kubernetes verbs over plain dicts, and nothing else.

Configuration (kubeconfig, in-cluster service account, exec plugins, token
refresh) and the HTTP transport come from `kubernetes_asyncio`; objects are
plain JSON dicts, because an operator handles custom resources as much as
built-in ones and generated model classes would only get in the way.

Each verb turns its arguments into a `_transport.Call` and sends it on the one
call path (`_transport.Transport`). A call may pass its own `timeout`. Error
answers raise distinct exceptions (`NotFound`, `Conflict`, ... in
`wukong.runtime`); 429 answers with `Retry-After` are retried within the time
bound, as client-go does.

The client knows nothing of reconciles. The manager's clients (`Manager.client`,
and `ctx.client` in a reconcile) send the same calls through its call layer
(`_calls`), which bounds each by the deadline of the reconcile it is made for
(found in the task's contextvars), closes writes behind the write fence, and
reports every call to the manager's observers.
"""

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

from wukong.runtime._transport import (
    CREATE,
    DELETE,
    GET,
    LIST,
    PATCH,
    UPDATE,
    WATCH,
    Body,
    Call,
    Object,
    Query,
    Transport,
    api_client,
)
from wukong.runtime.resources import Resource

__all__ = ["APPLY_PATCH", "JSON_PATCH", "MERGE_PATCH", "Client", "Object", "WatchEvent"]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


@dataclass(frozen=True)
class WatchEvent:
    """One watch event: ADDED, MODIFIED, DELETED or BOOKMARK, with its object."""

    type: str
    object: Object


class Client:
    """Typed verbs over the Kubernetes REST API. Use as an async context manager."""

    def __init__(self, api_client: k8s_client.ApiClient) -> None:
        """A client over `api_client` (its configuration and connection pool);
        `from_kubeconfig`, `from_environment` and `configured` build one."""
        self._transport = Transport(api_client)

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
        return cls(api_client(configuration, user_agent))

    @classmethod
    async def from_environment(cls, *, user_agent: str | None = None) -> Self:
        """In a pod: its service account. Elsewhere: $KUBECONFIG or ~/.kube/config."""
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = k8s_client.Configuration()
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return cls(api_client(configuration, user_agent))
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

    async def close(self) -> None:
        """Close the connection pool (of every client the manager made from this one too)."""
        await self._transport.close()

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
        return await self._transport.request(
            Call(GET, resource, namespace, path, [], timeout=timeout)
        )

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
        shard_selector: str | None = None,
    ) -> Object:
        """The list object: `items` plus `metadata.resourceVersion` to watch from.

        With `limit`, one page: `metadata.continue` (when set) asks for the next.
        A `shard_selector` (sharded list and watch) is echoed in `metadata.shardInfo`
        by a server that applied it.
        """
        return await self._transport.request(
            _list_call(
                resource,
                namespace,
                _selectors(label_selector, field_selector, shard_selector),
                limit,
                continue_token,
                timeout,
            )
        )

    async def _list_text(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
        timeout: float | None = None,
        shard_selector: str | None = None,
    ) -> str:
        """`list`'s answer as its JSON text, undecoded. Not a verb: an informer's paged
        list decodes it one object at a time (`_listpage.ListPage`)."""
        return await self._transport.request_text(
            _list_call(
                resource,
                namespace,
                _selectors(label_selector, field_selector, shard_selector),
                limit,
                continue_token,
                timeout,
            )
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
        return await self._transport.request(
            Call(CREATE, resource, namespace, path, [], body=body, timeout=timeout)
        )

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
        return await self._transport.request(
            Call(UPDATE, resource, namespace, path, [], body=body, timeout=timeout)
        )

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
        return await self._transport.request(
            Call(
                PATCH,
                resource,
                namespace,
                path,
                query,
                body=patch,
                content_type=patch_type,
                timeout=timeout,
            )
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
        return await self._transport.request(
            Call(DELETE, resource, namespace, path, [], body=body or None, timeout=timeout)
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
        shard_selector: str | None = None,
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
        query = _selectors(label_selector, field_selector, shard_selector)
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
        events = self._transport.stream(
            Call(WATCH, resource, namespace, path, query),
            timeout_seconds=timeout_seconds,
            inactivity_timeout=inactivity_timeout,
        )
        try:
            async for event in events:
                yield WatchEvent(event["type"], event["object"])
        finally:
            await events.aclose()  # releases the response now, not when collected


def with_transport(transport: Transport) -> Client:
    """A client whose calls go through `transport` (the manager's call layer)."""
    client = Client.__new__(Client)
    client._transport = transport
    return client


def transport_of(client: Client) -> Transport:
    """The transport `client`'s calls go through."""
    return client._transport


def _list_call(
    resource: Resource,
    namespace: str | None,
    query: Query,
    limit: int | None,
    continue_token: str | None,
    timeout: float | None,
) -> Call:
    if limit is not None:
        query.append(("limit", str(limit)))
    if continue_token:
        query.append(("continue", continue_token))
    path = resource.path(namespace=namespace)
    return Call(LIST, resource, namespace, path, query, timeout=timeout, server_timeout=True)


def _selectors(
    label_selector: str | None, field_selector: str | None, shard_selector: str | None = None
) -> Query:
    query: Query = []
    if label_selector:
        query.append(("labelSelector", label_selector))
    if field_selector:
        query.append(("fieldSelector", field_selector))
    if shard_selector:
        query.append(("shardSelector", shard_selector))
    return query
