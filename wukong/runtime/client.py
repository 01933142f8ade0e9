"""An async Kubernetes client that speaks plain dicts.

Configuration (kubeconfig, in-cluster service account, exec plugins, token
refresh) and the HTTP transport come from `kubernetes_asyncio`; objects are
plain JSON dicts, because an operator handles custom resources as much as
built-in ones and generated model classes would only get in the way.

Every call takes a `timeout` in seconds: the whole request, response body
included, must finish within it (a watch is bounded by `timeout_seconds`
instead, on the server and on the client). Error answers raise the distinct
exceptions of `wukong.runtime.errors`.
"""

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

from wukong.runtime.errors import Gone, api_error
from wukong.runtime.resources import Resource

Object = dict[str, Any]
# Defined here: inside Client, `list` names the verb, not the builtin.
Query = list[tuple[str, str]]

# Extra client-side time for a watch beyond its server-side timeoutSeconds, so
# the server's clean end of the stream arrives before the client gives up.
_WATCH_SLACK_SECONDS = 5.0
_MAX_THROTTLE_RETRIES = 10
_MAX_RETRY_AFTER_SECONDS = 5.0


@dataclass(frozen=True)
class WatchEvent:
    """One watch event: ADDED, MODIFIED, DELETED or BOOKMARK, with its object."""

    type: str
    object: Object


class Client:
    """Typed verbs over the Kubernetes REST API. Use as an async context manager."""

    def __init__(self, api_client: k8s_client.ApiClient) -> None:
        self._api = api_client

    @classmethod
    async def from_kubeconfig(
        cls, path: str | Path | None = None, *, context: str | None = None
    ) -> Self:
        configuration = k8s_client.Configuration()
        await k8s_config.load_kube_config(
            config_file=str(path) if path else None,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
        return cls(k8s_client.ApiClient(configuration=configuration))

    @classmethod
    async def from_environment(cls) -> Self:
        """In a pod: its service account. Elsewhere: $KUBECONFIG or ~/.kube/config."""
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = k8s_client.Configuration()
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return cls(k8s_client.ApiClient(configuration=configuration))
        return await cls.from_kubeconfig(os.environ.get("KUBECONFIG") or None)

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
        return await self._request("GET", path, timeout=timeout)

    async def list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout: float | None = None,
    ) -> Object:
        """The list object: `items` plus `metadata.resourceVersion` to watch from."""
        query = _selectors(label_selector, field_selector)
        if timeout is not None:
            query.append(("timeoutSeconds", str(max(1, int(timeout)))))
        return await self._request(
            "GET", resource.path(namespace=namespace), query=query, timeout=timeout
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
        return await self._request(
            "POST", resource.path(namespace=namespace), body=body, timeout=timeout
        )

    async def delete(
        self,
        resource: Resource,
        name: str,
        *,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> Object:
        path = resource.path(namespace=namespace, name=name)
        return await self._request("DELETE", path, timeout=timeout)

    async def watch(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        resource_version: str | None = None,
        timeout_seconds: int = 300,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> AsyncIterator[WatchEvent]:
        """Stream events until the server ends the watch after `timeout_seconds`.

        Raises `Gone` when `resource_version` is too old: the caller must list again.
        """
        query = _selectors(label_selector, field_selector)
        query += [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        path = resource.path(namespace=namespace)
        response = await self._send(
            "GET", path, query=query, timeout=timeout_seconds + _WATCH_SLACK_SECONDS
        )
        try:
            await self._raise_for_status(response, "WATCH", path)
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
        finally:
            response.release()

    # -- transport ---------------------------------------------------------------

    async def _request(
        self,
        verb: str,
        path: str,
        *,
        query: Query | None = None,
        body: Object | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> Object:
        response = await self._send(
            verb, path, query=query, body=body, content_type=content_type, timeout=timeout
        )
        try:
            await self._raise_for_status(response, verb, path)
            result: Object = await response.json()
            return result
        finally:
            response.release()

    async def _send(
        self,
        verb: str,
        path: str,
        *,
        query: Query | None = None,
        body: Object | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> aiohttp.ClientResponse:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        for attempt in range(_MAX_THROTTLE_RETRIES + 1):
            remaining = None if deadline is None else max(0.001, deadline - loop.time())
            # _preload_content=False hands back aiohttp's response unread, so
            # watches can stream and error bodies are decoded here, not by the
            # generated client.
            response: aiohttp.ClientResponse = await self._api.call_api(
                path,
                verb,
                query_params=query or [],
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=aiohttp.ClientTimeout(total=remaining),
            )
            delay = _retry_after(response)
            if delay is None or attempt == _MAX_THROTTLE_RETRIES:
                return response
            if deadline is not None and loop.time() + delay >= deadline:
                return response  # no time left to wait: let the 429 surface
            # 429 with Retry-After: the server asks us to come back (APF
            # throttling, or a watch cache still initialising after a CRD was
            # created). client-go retries these the same way.
            response.release()
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    @staticmethod
    async def _raise_for_status(response: aiohttp.ClientResponse, verb: str, path: str) -> None:
        if response.status < 400:
            return
        try:
            body = await response.json(content_type=None)
        except (ValueError, aiohttp.ContentTypeError):
            body = {"message": (await response.text())[:500]}
        error = api_error(status=response.status, body=body, verb=verb, path=path)
        raise error


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    """Seconds to wait before retrying a throttled (429) request, else None."""
    if response.status != 429:
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


__all__ = ["Client", "Gone", "Object", "WatchEvent"]
