"""Registering the Wukong webhook with the test cluster's API server, for one namespace.

The API server loads a ValidatingWebhookConfiguration asynchronously, so the
first writes after its create may pass by the webhook. `registered_webhook`
therefore sends marker Wukongs (naming a StorageClass that does not exist)
until the webhook rejects one, as Kubernetes' e2e tests do, and only then
yields.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from wukong.devcluster import ControlPlane
from wukong.operator.admission import webhook_configuration
from wukong.operator.api import WUKONGS
from wukong.runtime import ApiError, Client, Object
from wukong.runtime.resources import VALIDATING_WEBHOOK_CONFIGURATIONS

# The names of the Wukongs sent until the API server calls the new webhook.
MARKER = "webhook-ready-marker-"


def wukong_object(name: str, namespace: str, **spec: object) -> Object:
    return {
        "apiVersion": WUKONGS.api_version,
        "kind": WUKONGS.kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"cpu": 1, "memory": "1Gi", **spec},
    }


@asynccontextmanager
async def registered_webhook(
    client: Client,
    control_plane: ControlPlane,
    *,
    url: str,
    namespace: str,
    timeout_seconds: int = 10,
    failure_policy: str = "Fail",
) -> AsyncIterator[None]:
    """The webhook at `url` registered for `namespace`, by default with failurePolicy Fail
    (an unanswered review fails the write and cannot pass unnoticed), until the block ends."""
    name = f"wukong-test-{uuid.uuid4().hex[:8]}"
    await client.create(
        VALIDATING_WEBHOOK_CONFIGURATIONS,
        webhook_configuration(
            name,
            url=url,
            ca_bundle=control_plane.ca_cert.read_bytes(),
            failure_policy=failure_policy,
            timeout_seconds=timeout_seconds,
            namespace_selector={"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        ),
    )
    try:
        await _until_called(client, namespace)
        yield
    finally:
        await client.delete(VALIDATING_WEBHOOK_CONFIGURATIONS, name)


async def _until_called(client: Client, namespace: str) -> None:
    """Create marker Wukongs naming a missing class until the webhook rejects one."""
    disks = [{"name": "root", "size": "1Gi", "storageClassName": "absent-marker-class"}]
    for attempt in range(500):
        name = f"{MARKER}{attempt}"
        try:
            await client.create(WUKONGS, wukong_object(name, namespace, disks=disks))
        except ApiError as error:
            if error.status == 403:
                return
            raise
        await client.delete(WUKONGS, name, namespace=namespace)  # admitted: not yet called
        await asyncio.sleep(0.02)
    raise AssertionError("the API server never called the registered webhook")
