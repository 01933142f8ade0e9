"""A WukongSet member whose VM and instance vanished: its node and addresses are cleared
at once, its VM is made again, and the set counts it not ready until it runs again."""

from tests.integration.helpers import RecordingObserver
from tests.integration.test_wukong_deletion import _crds_gone
from tests.integration.test_wukongset import (
    _set,
    _status,
    _wait_set,
    set_operator,  # noqa: F401 (a fixture)
)
from tests.integration.test_wukongset_deletion import KUBEVIRT_CRDS, vanish
from tests.integration.wukong_harness import StartWukong
from wukong.devcluster.simulator import SimulationConfig
from wukong.devcluster.simulator.crds import install_infrastructure
from wukong.operator.wukongset_api import WUKONGSETS
from wukong.runtime import Client, Object
from wukong.runtime.apis import VIRTUAL_MACHINE_INSTANCES
from wukong.runtime.resources import CUSTOM_RESOURCE_DEFINITIONS


def _node(wukong: Object) -> str | None:
    return (wukong.get("status") or {}).get("nodeName")


async def test_a_member_whose_vm_and_instance_vanished_is_not_left_on_its_node(
    client: Client,
    namespace: str,
    start_wukong: StartWukong,
    set_operator: RecordingObserver,  # noqa: F811
) -> None:
    # A new instance takes 3 s to be scheduled: long enough to see what the member
    # says while it has none.
    run = await start_wukong(simulation=SimulationConfig(schedule_delay=3.0))
    await client.create(WUKONGSETS, _set(namespace, "web", 2))
    await _wait_set(client, namespace, "web", lambda s: _status(s, "readyReplicas") == 2, what="2")
    before = await run.get("web-1")
    assert _node(before) == "sim-node-1" and before["status"]["ipAddresses"]
    old_vmi = await client.get(VIRTUAL_MACHINE_INSTANCES, "web-1", namespace=namespace)

    # Both vanish at once (a node lost with its pods, KubeVirt's objects removed by hand).
    await vanish(client, namespace, "web-1")
    cleared = await run.wait_for(
        "web-1",
        lambda w: _node(w) is None and (w.get("status") or {}).get("phase") != "Running",
        what="web-1's node cleared",
        timeout=2.5,
    )
    assert "ipAddresses" not in cleared["status"]
    await _wait_set(
        client, namespace, "web", lambda s: _status(s, "readyReplicas") == 1, what="1 ready"
    )

    # Its VM is made again, and the member runs on the node its new instance names.
    again = await run.wait_for(
        "web-1", lambda w: (w.get("status") or {}).get("phase") == "Running", what="Running"
    )
    new_vmi = await client.get(VIRTUAL_MACHINE_INSTANCES, "web-1", namespace=namespace)
    assert new_vmi["metadata"]["uid"] != old_vmi["metadata"]["uid"]
    assert _node(again) == new_vmi["status"]["nodeName"]
    await _wait_set(client, namespace, "web", lambda s: _status(s, "readyReplicas") == 2, what="2")
    reasons = [e["reason"] for e in await run.events("web-1")]
    assert "VirtualMachineLost" in reasons, reasons


async def test_members_whose_kubevirt_was_uninstalled_are_reported_on_no_node(
    client: Client,
    namespace: str,
    start_wukong: StartWukong,
    set_operator: RecordingObserver,  # noqa: F811
) -> None:
    """KubeVirt's CRDs removed under running members (their VMs and instances with them):
    nothing can make them again, so each says so, on no node."""
    run = await start_wukong()
    await client.create(WUKONGSETS, _set(namespace, "web", 2))
    await _wait_set(client, namespace, "web", lambda s: _status(s, "readyReplicas") == 2, what="2")
    try:
        for name in KUBEVIRT_CRDS:
            await client.delete(CUSTOM_RESOURCE_DEFINITIONS, name)
        await run.wait_until(lambda: _crds_gone(client, KUBEVIRT_CRDS), what="KubeVirt gone")
        for member in ("web-0", "web-1"):
            reported = await run.wait_for(
                member,
                lambda w: _node(w) is None and (w.get("status") or {}).get("phase") == "Error",
                what=f"{member} reported on no node",
            )
            assert "ipAddresses" not in reported["status"]
            assert "VirtualMachineLost" in await run.warnings(member)
        await _wait_set(
            client, namespace, "web", lambda s: _status(s, "readyReplicas") == 0, what="0 ready"
        )
    finally:
        await run.stop_operator()
        await install_infrastructure(client)  # for the tests that follow
