"""Owned and mapped kinds reach the right primary, including through a cache index."""

import asyncio

from tests.integration.helpers import running
from tests.polling import eventually
from wukong.runtime import (
    Client,
    Controller,
    Manager,
    ManagerOptions,
    Object,
    ReconcileContext,
    Request,
    Result,
    Watch,
)
from wukong.runtime.resources import CONFIGMAPS, SECRETS, Resource

SERVICES = Resource(group="", version="v1", plural="services", kind="Service")
# Index of primaries (ConfigMaps) by the Secret named in their data, as the
# operator indexes Wukongs by the NetworkAttachmentDefinitions they name.
BY_SECRET = "by-secret"


class RequestLog:
    def __init__(self) -> None:
        self.requests: list[Request] = []

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        self.requests.append(request)
        return Result()


async def test_owned_and_mapped_events_enqueue_their_primary(
    client: Client, namespace: str
) -> None:
    recorder = RequestLog()
    manager = Manager(client=client, options=ManagerOptions(namespace=namespace))
    primaries = manager.informer(CONFIGMAPS)
    primaries.store.add_index(BY_SECRET, lambda cm: [(cm.get("data") or {}).get("secret", "")])

    def primaries_using(secret: Object) -> list[Request]:
        return [
            Request(cm["metadata"]["namespace"], cm["metadata"]["name"])
            for cm in primaries.store.by_index(BY_SECRET, secret["metadata"]["name"])
        ]

    manager.add(
        Controller(
            name="watches",
            reconciler=recorder,
            primary=CONFIGMAPS,
            owns=[SERVICES],
            watches=[Watch(SECRETS, primaries_using)],
        )
    )
    owner = await client.create(
        CONFIGMAPS,
        {
            "metadata": {"name": "owner", "namespace": namespace},
            "data": {"secret": "creds"},
        },
    )
    await client.create(CONFIGMAPS, {"metadata": {"name": "bystander", "namespace": namespace}})
    async with running(manager):
        await eventually(lambda: len(set(recorder.requests)) == 2, what="initial reconciles")
        recorder.requests.clear()

        await client.create(
            SERVICES,
            {
                "metadata": {
                    "name": "svc",
                    "namespace": namespace,
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "ConfigMap",
                            "name": "owner",
                            "uid": owner["metadata"]["uid"],
                            "controller": True,
                        }
                    ],
                },
                "spec": {"ports": [{"port": 80}]},
            },
        )
        await eventually(
            lambda: Request(namespace, "owner") in recorder.requests,
            what="the owner reconciled for its Service",
        )
        recorder.requests.clear()

        await client.create(SECRETS, {"metadata": {"name": "creds", "namespace": namespace}})
        await eventually(
            lambda: Request(namespace, "owner") in recorder.requests,
            what="the primary using the Secret, found through the index",
        )
        await asyncio.sleep(0.5)
        assert Request(namespace, "bystander") not in recorder.requests
