"""The manager freezes the start-up heap once its caches are synced, unless told not to."""

import gc
from collections.abc import Iterator

import pytest

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
    _heap,
)
from wukong.runtime import _manager as manager_module
from wukong.runtime.resources import CONFIGMAPS


class Seen:
    def __init__(self) -> None:
        self.requests: list[Request] = []

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        self.requests.append(request)
        return Result()


@pytest.fixture
def freezer(monkeypatch: pytest.MonkeyPatch) -> Iterator[_heap.HeapFreezer]:
    """A fresh freezer in place of the process's (an earlier test may have used that one)."""
    fresh = _heap.HeapFreezer()
    monkeypatch.setattr(manager_module, "STARTUP", fresh)
    yield fresh
    gc.unfreeze()


@pytest.mark.parametrize("freeze", [True, False])
async def test_heap_frozen_after_sync(
    client: Client, namespace: str, freezer: _heap.HeapFreezer, freeze: bool
) -> None:
    manager = Manager(
        client=client, options=ManagerOptions(namespace=namespace, freeze_startup_heap=freeze)
    )
    reconciler = Seen()
    manager.add(Controller(name="heap", reconciler=reconciler, primary=CONFIGMAPS))
    async with running(manager):
        await client.create(CONFIGMAPS, {"metadata": {"name": "probe", "namespace": namespace}})
        # Controllers start after the freeze: a reconcile shows that run() got past it.
        await eventually(lambda: bool(reconciler.requests), what="a reconcile")
        assert freezer.frozen is freeze
