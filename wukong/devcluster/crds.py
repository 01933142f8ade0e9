"""Installing CustomResourceDefinitions (and other cluster objects) into the dev cluster."""

import asyncio
from collections.abc import Sequence

from wukong.runtime import AlreadyExists, Client, Object
from wukong.runtime.resources import CUSTOM_RESOURCE_DEFINITIONS, Resource


async def create_if_missing(client: Client, resource: Resource, body: Object) -> None:
    try:
        await client.create(resource, body)
    except AlreadyExists:
        pass


async def wait_crd_established(client: Client, name: str, *, timeout: float = 30.0) -> None:
    """Wait until the CRD `name` is Established (its resource is served)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                crd = await client.get(CUSTOM_RESOURCE_DEFINITIONS, name)
                conditions = (crd.get("status") or {}).get("conditions") or []
                if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise TimeoutError(f"CRD {name} not Established after {timeout:.0f}s") from None


async def install_crds(client: Client, crds: Sequence[Object]) -> None:
    """Create each CRD unless it exists, then wait until all are served."""
    for crd in crds:
        await create_if_missing(client, CUSTOM_RESOURCE_DEFINITIONS, crd)
    for crd in crds:
        await wait_crd_established(client, crd["metadata"]["name"])
