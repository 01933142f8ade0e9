"""Deleting a WukongSet finishes whatever state its members are in: one already being
deleted, one mid-migration, one whose VM is already gone, KubeVirt uninstalled."""

import asyncio
import contextlib

import pytest

from tests.integration.helpers import RecordingObserver
from tests.integration.test_wukong_deletion import _crds_gone
from tests.integration.test_wukongset import (
    _members,
    _migrate,
    _set,
    _status,
    _until,
    _wait_set,
    set_operator,  # noqa: F401 (a fixture)
)
from tests.integration.wukong_harness import StartWukong, WukongRun
from wukong.devcluster.simulator import SimulationConfig
from wukong.devcluster.simulator.crds import infrastructure_crds, install_infrastructure
from wukong.operator.api import WUKONGS
from wukong.operator.wukongset_api import WUKONGSETS
from wukong.runtime import Client, NotFound
from wukong.runtime.apis import VIRTUAL_MACHINE_INSTANCES, VIRTUAL_MACHINES
from wukong.runtime.resources import (
    CUSTOM_RESOURCE_DEFINITIONS,
    PERSISTENT_VOLUME_CLAIMS,
    Resource,
)

REPLICAS = 3
# The member put in the state under test; the others are plain Running members.
MEMBER = "web-1"
KUBEVIRT_CRDS = [
    crd["metadata"]["name"]
    for crd in infrastructure_crds()
    if crd["spec"]["group"] == VIRTUAL_MACHINES.group
]


async def vanish(client: Client, namespace: str, name: str) -> None:
    """Delete a Wukong's VM and its instance at once (KubeVirt may delete the
    instance first, as the VM goes)."""

    async def delete(resource: Resource) -> None:
        with contextlib.suppress(NotFound):
            await client.delete(resource, name, namespace=namespace)

    await asyncio.gather(delete(VIRTUAL_MACHINES), delete(VIRTUAL_MACHINE_INSTANCES))


async def _deleting(run: WukongRun) -> None:
    await run.client.delete(WUKONGS, MEMBER, namespace=run.namespace)


async def _migrating(run: WukongRun) -> None:
    await _migrate(run.client, run.namespace, MEMBER)
    await run.wait_for(
        MEMBER, lambda w: (w.get("status") or {}).get("phase") == "Migrating", what="Migrating"
    )


async def _vm_gone(run: WukongRun) -> None:
    # With the Wukong controller away, nothing makes the VM again before the set goes.
    await run.stop_operator()
    await vanish(run.client, run.namespace, MEMBER)


async def _kubevirt_uninstalled(run: WukongRun) -> None:
    for name in KUBEVIRT_CRDS:
        await run.client.delete(CUSTOM_RESOURCE_DEFINITIONS, name)
    await run.wait_until(lambda: _crds_gone(run.client, KUBEVIRT_CRDS), what="KubeVirt gone")


STATES = {
    "already-deleting": _deleting,
    "mid-migration": _migrating,
    "vm-already-gone": _vm_gone,
    "kubevirt-uninstalled": _kubevirt_uninstalled,
}


@pytest.mark.parametrize("state", list(STATES))
async def test_deleting_the_set_finishes_whatever_state_its_members_are_in(
    client: Client,
    namespace: str,
    start_wukong: StartWukong,
    set_operator: RecordingObserver,  # noqa: F811
    state: str,
) -> None:
    # A migration that outlasts the whole test unless the deletion ends it.
    run = await start_wukong(simulation=SimulationConfig(migration_delay=120.0))
    await client.create(WUKONGSETS, _set(namespace, "web", REPLICAS))
    await _wait_set(
        client, namespace, "web", lambda s: _status(s, "readyReplicas") == REPLICAS, what="ready"
    )
    try:
        await STATES[state](run)
        await client.delete(WUKONGSETS, "web", namespace=namespace)
        if state == "vm-already-gone":
            run.start_operator()

        async def set_gone() -> bool:
            try:
                await client.get(WUKONGSETS, "web", namespace=namespace)
            except NotFound:
                return True
            return False

        await _until(set_gone, "the WukongSet to be deleted", timeout=60)
        assert await _members(client, namespace, "web") == {}
        # Nothing of any member is left behind: its disks went with it.
        claims = await client.list(PERSISTENT_VOLUME_CLAIMS, namespace=namespace)
        left = [
            c["metadata"]["name"]
            for c in claims["items"]
            if not c["metadata"].get("deletionTimestamp")
        ]
        assert left == [], left
        if state != "kubevirt-uninstalled":
            vms = await client.list(VIRTUAL_MACHINES, namespace=namespace)
            assert [vm["metadata"]["name"] for vm in vms["items"]] == []
    finally:
        if state == "kubevirt-uninstalled":
            await run.stop_operator()
            await install_infrastructure(client)  # for the tests that follow
