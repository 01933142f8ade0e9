"""The benchmarks' custom resource: Wukong-sized objects with a status subresource.

`BenchObject` (bench.novasphere.dev/v1) carries a spec shaped like a Wukong's
(cpu, memory, networks, disks) and a free-form status, so peers can do a real
reconcile's work on it: read it from their cache, write one status patch.
Used by `reconcile_capacity.py` (and the cache-scale benchmark).
"""

import asyncio
from typing import Any

from wukong.devcluster.crds import wait_crd_established
from wukong.runtime import AlreadyExists, Client, Resource
from wukong.runtime.resources import CUSTOM_RESOURCE_DEFINITIONS

BENCH_OBJECTS = Resource(
    group="bench.novasphere.dev", version="v1", plural="benchobjects", kind="BenchObject"
)

_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{BENCH_OBJECTS.plural}.{BENCH_OBJECTS.group}"},
    "spec": {
        "group": BENCH_OBJECTS.group,
        "scope": "Namespaced",
        "names": {
            "plural": BENCH_OBJECTS.plural,
            "singular": "benchobject",
            "kind": BENCH_OBJECTS.kind,
            "listKind": "BenchObjectList",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


def bench_object(namespace: str, name: str) -> dict[str, Any]:
    """An object the size and shape of a Wukong with two networks and three disks."""
    return {
        "apiVersion": BENCH_OBJECTS.api_version,
        "kind": BENCH_OBJECTS.kind,
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "bench"}},
        "spec": {
            "cpu": 2,
            "memory": "2Gi",
            "networks": [
                {"name": "data", "config": '{"cniVersion": "0.3.1", "type": "bridge"}'},
                {"name": "storage", "nadName": "shared-storage"},
            ],
            "disks": [
                {
                    "name": "root",
                    "size": "10Gi",
                    "image": "docker://quay.io/containerdisks/fedora:40",
                },
                {"name": "data", "size": "20Gi", "storageClassName": "standard"},
                {"name": "scratch", "size": "5Gi", "storageClassName": "local-wait"},
            ],
        },
    }


async def install(client: Client) -> None:
    try:
        await client.create(CUSTOM_RESOURCE_DEFINITIONS, _CRD)
    except AlreadyExists:
        pass
    await wait_crd_established(client, _CRD["metadata"]["name"])


async def create_objects(
    client: Client, namespace: str, count: int, *, concurrency: int = 32
) -> list[str]:
    """Create `count` BenchObjects (obj-00000, ...); their names."""
    names = [f"obj-{index:06d}" for index in range(count)]
    limit = asyncio.Semaphore(concurrency)

    async def create(name: str) -> None:
        async with limit:
            await client.create(BENCH_OBJECTS, bench_object(namespace, name))

    await asyncio.gather(*(create(name) for name in names))
    return names
