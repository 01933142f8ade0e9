"""Deletion in dependency order, never stuck on a child that is already gone.

VM first, then (once its VMI is gone) DataVolumes and claims, then the
NetworkAttachmentDefinitions the Wukong created, then the finalizer.
"""

import logging

import pytest

from tests.integration.helpers import RecordingObserver
from tests.integration.test_wukong_controller import FULL_SPEC, _create_shared_nad, _exists
from tests.integration.wukong_harness import StartWukong, WukongRun
from wukong.devcluster.simulator.crds import infrastructure_crds, install_infrastructure
from wukong.operator.api import FINALIZER, WUKONGS
from wukong.operator.finalizer import OWNED_BY, DeletionCaches, Finalizer, owner_uid_key
from wukong.operator.owned import owned_object
from wukong.operator.views import parse_wukong
from wukong.runtime import (
    Client,
    EventHandler,
    EventRecorder,
    NotFound,
    Object,
    ReconcileContext,
    Request,
    Store,
)
from wukong.runtime._calls import layered
from wukong.runtime.apis import (
    DATA_VOLUMES,
    NETWORK_ATTACHMENT_DEFINITIONS,
    VIRTUAL_MACHINE_INSTANCES,
    VIRTUAL_MACHINES,
)
from wukong.runtime.resources import (
    CUSTOM_RESOURCE_DEFINITIONS,
    PERSISTENT_VOLUME_CLAIMS,
    Resource,
)

CHILDREN: list[tuple[Resource, str]] = [
    (VIRTUAL_MACHINES, "web"),
    (VIRTUAL_MACHINE_INSTANCES, "web"),
    (DATA_VOLUMES, "web-image"),
    (PERSISTENT_VOLUME_CLAIMS, "web-root"),
    (PERSISTENT_VOLUME_CLAIMS, "web-scratch"),
    (PERSISTENT_VOLUME_CLAIMS, "web-image"),
    (NETWORK_ATTACHMENT_DEFINITIONS, "web-data"),
]


def _running(obj: Object) -> bool:
    return (obj.get("status") or {}).get("phase") == "Running"


async def wait_all_gone(run: WukongRun, *, timeout: float = 30.0) -> None:
    """The Wukong `web` goes within `timeout`, and then every dependent it created
    (none orphaned); the NetworkAttachmentDefinition it only used stays."""
    await run.wait_gone("web", timeout=timeout)
    for resource, name in CHILDREN:

        async def gone(resource: Resource = resource, name: str = name) -> bool:
            return not await _exists(run, resource, name)

        # Claims carry pvc-protection: they go once no VMI uses them.
        await run.wait_until(gone, what=f"{resource.kind} {name} to be deleted")
    assert await _exists(run, NETWORK_ATTACHMENT_DEFINITIONS, "shared-storage")


async def test_deletion_follows_the_seed_order(start_wukong: StartWukong) -> None:
    run = await start_wukong()
    await _create_shared_nad(run)
    await run.create("web", FULL_SPEC)
    await run.wait_for("web", _running, what="Running")
    # How many API calls the operator had made when its cache lost the VMI.
    vmi_gone_after: list[int] = []
    run.operator.informer(VIRTUAL_MACHINE_INSTANCES).add_handler(
        EventHandler(on_delete=lambda vmi: vmi_gone_after.append(len(run.calls)))
    )
    start = len(run.calls)  # the operator's API calls
    await run.client.delete(WUKONGS, "web", namespace=run.namespace)
    await wait_all_gone(run)
    await run.stop_operator()

    steps = [
        (call.verb, call.resource, call.status_code)
        for call in run.calls[start:]
        if call.verb in ("delete", "get", "patch") and call.resource != "events"
    ]

    def first(verb: str, resource: str) -> int:
        return next(i for i, (v, r, _) in enumerate(steps) if (v, r) == (verb, resource))

    vm = first("delete", "virtualmachines")
    data_volume = first("delete", "datavolumes")
    claims = first("delete", "persistentvolumeclaims")
    nad = first("delete", "network-attachment-definitions")
    finalizer = max(i for i, (v, r, _) in enumerate(steps) if (v, r) == ("patch", "wukongs"))
    assert vm < data_volume < claims < nad < finalizer, steps
    # The disks went only after the operator saw the VMI gone (a call is recorded
    # once it ends, so the delete of a DataVolume started after it is listed after).
    data_volume_call = next(
        i
        for i, call in enumerate(run.calls)
        if i >= start and (call.verb, call.resource) == ("delete", "datavolumes")
    )
    assert vmi_gone_after and data_volume_call >= vmi_gone_after[0], steps
    deleted_nads = [s for s in steps if s[:2] == ("delete", "network-attachment-definitions")]
    assert len(deleted_nads) == 1  # web-data; shared-storage is only referenced
    reasons = [e["reason"] for e in await run.events("web")]
    assert "WaitingForVirtualMachine" in reasons


@pytest.mark.parametrize(
    "missing",
    [
        (VIRTUAL_MACHINES, "web"),
        (DATA_VOLUMES, "web-image"),
        (PERSISTENT_VOLUME_CLAIMS, "web-root"),
        (NETWORK_ATTACHMENT_DEFINITIONS, "web-data"),
    ],
    ids=lambda child: f"{child[0].kind}-{child[1]}",
)
async def test_deletion_with_a_child_already_gone(
    start_wukong: StartWukong, missing: tuple[Resource, str]
) -> None:
    run = await start_wukong()
    await _create_shared_nad(run)
    await run.create("web", FULL_SPEC)
    await run.wait_for("web", _running, what="Running")

    # With the operator away, nothing re-creates the child before the Wukong goes.
    await run.stop_operator()
    resource, name = missing
    await run.client.delete(resource, name, namespace=run.namespace)
    await run.client.delete(WUKONGS, "web", namespace=run.namespace)
    run.start_operator()
    await wait_all_gone(run)


async def test_deletion_is_not_stuck_when_kubevirt_is_uninstalled(
    client: Client, start_wukong: StartWukong
) -> None:
    """KubeVirt's CRDs removed (its VMs with them): the Wukong still goes, disks and all."""
    run = await start_wukong()
    await _create_shared_nad(run)
    await run.create("web", FULL_SPEC)
    await run.wait_for("web", _running, what="Running")
    kubevirt = [
        crd["metadata"]["name"]
        for crd in infrastructure_crds()
        if crd["spec"]["group"] == VIRTUAL_MACHINES.group
    ]
    try:
        for name in kubevirt:
            await client.delete(CUSTOM_RESOURCE_DEFINITIONS, name)
        await run.wait_until(lambda: _crds_gone(client, kubevirt), what="KubeVirt uninstalled")
        await run.client.delete(WUKONGS, "web", namespace=run.namespace)
        await run.wait_gone("web")
        for resource, name in CHILDREN:
            if resource.group != VIRTUAL_MACHINES.group:
                assert not await _exists(run, resource, name), f"{resource.kind} {name} left"
    finally:
        await run.stop_operator()
        await run.wait_until(lambda: _crds_gone(client, kubevirt), what="KubeVirt uninstalled")
        await install_infrastructure(client)  # for the tests that follow


async def _crds_gone(client: Client, names: list[str]) -> bool:
    for name in names:
        try:
            await client.get(CUSTOM_RESOURCE_DEFINITIONS, name)
        except NotFound:
            continue
        return False
    return True


async def test_a_dependent_the_cache_never_showed_is_read_live_and_deleted(
    client: Client, namespace: str, infrastructure: None
) -> None:
    """A NAD created just before the deletion, not in the cache yet, is found by the one
    live read the finalizer makes of that kind; claims the cache showed are not read."""
    body = {
        "apiVersion": WUKONGS.api_version,
        "kind": WUKONGS.kind,
        "metadata": {"name": "w", "namespace": namespace, "finalizers": [FINALIZER]},
        "spec": {
            "networks": [{"name": "data", "config": '{"type": "bridge"}'}],
            "disks": [{"name": "root", "size": "1Gi"}],
        },
    }
    wukong = parse_wukong(await client.create(WUKONGS, body))
    nad = await client.create(
        NETWORK_ATTACHMENT_DEFINITIONS,
        owned_object(wukong, NETWORK_ATTACHMENT_DEFINITIONS, "w-data", spec={"config": "{}"}),
    )
    claim_spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    claim = await client.create(
        PERSISTENT_VOLUME_CLAIMS,
        owned_object(wukong, PERSISTENT_VOLUME_CLAIMS, "w-root", spec=claim_spec),
    )
    await client.delete(WUKONGS, "w", namespace=namespace)
    # Caches as the operator's could be: the claim shown, the NAD not arrived yet.
    stores = {name: Store() for name in ("vms", "vmis", "dvs", "claims", "nads")}
    for name in ("dvs", "claims", "nads"):
        stores[name].add_index(OWNED_BY, owner_uid_key)
    stores["claims"].upsert(claim)
    finalizer = Finalizer(
        caches=DeletionCaches(
            virtual_machines=stores["vms"],
            virtual_machine_instances=stores["vmis"],
            data_volumes=stores["dvs"],
            claims=stores["claims"],
            network_attachment_definitions=stores["nads"],
        ),
        recorder=EventRecorder(component="test"),
    )
    recorder = RecordingObserver()
    observed = layered(client, observer=recorder)
    request = Request(namespace, "w")
    for _ in range(10):  # reconciles; each one makes progress
        try:
            current = await client.get(WUKONGS, "w", namespace=namespace)
        except NotFound:
            break
        ctx = ReconcileContext(
            controller="test",
            request=request,
            timeout=15,
            client=observed,
            logger=logging.getLogger("test"),
        )
        await finalizer.finalize(ctx, parse_wukong(current))
    else:
        raise AssertionError("the finalizer was never removed")

    assert await _gone_or_deleting(client, NETWORK_ATTACHMENT_DEFINITIONS, nad)
    assert await _gone_or_deleting(client, PERSISTENT_VOLUME_CLAIMS, claim)
    reads = {(c.verb, c.resource) for c in recorder.calls if c.verb in ("get", "list")}
    # The VM and its VMI were never shown (never created, or not arrived yet), nor
    # was the NAD; the claim was, and no DataVolume is expected (no disk has an image).
    assert reads == {
        ("get", "virtualmachines"),
        ("get", "virtualmachineinstances"),
        ("list", "network-attachment-definitions"),
    }, reads


async def _gone_or_deleting(client: Client, resource: Resource, obj: Object) -> bool:
    try:
        current = await client.get(
            resource, obj["metadata"]["name"], namespace=obj["metadata"]["namespace"]
        )
    except NotFound:
        return True
    return bool(current["metadata"].get("deletionTimestamp"))
