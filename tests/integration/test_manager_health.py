"""The manager's /healthz and /readyz, as kubelet probes would call them."""

import aiohttp

from tests.integration.helpers import running
from tests.polling import eventually
from wukong.runtime import (
    Client,
    Controller,
    Manager,
    ManagerOptions,
    ReconcileContext,
    Request,
    Result,
)
from wukong.runtime.resources import CONFIGMAPS


class Idle:
    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        return Result()


async def _status(session: aiohttp.ClientSession, url: str) -> int:
    try:
        async with session.get(url) as response:
            return response.status
    except aiohttp.ClientError:
        return -1


async def test_health_endpoints_follow_the_lifecycle(client: Client, namespace: str) -> None:
    manager = Manager(
        client=client, options=ManagerOptions(namespace=namespace, health_bind="127.0.0.1:0")
    )
    manager.add(Controller(name="health", reconciler=Idle(), primary=CONFIGMAPS))
    async with aiohttp.ClientSession() as session:
        async with running(manager):
            await eventually(lambda: manager.health_port is not None, what="the health server")
            base = f"http://127.0.0.1:{manager.health_port}"

            async def ready() -> bool:
                return await _status(session, f"{base}/readyz") == 200

            await eventually(ready, what="/readyz ok once informers have synced")
            assert await _status(session, f"{base}/healthz") == 200
        assert await _status(session, f"{base}/healthz") == -1  # server closed on shutdown
