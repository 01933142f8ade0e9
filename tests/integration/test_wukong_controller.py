"""The Wukong controller on the real API server, with simulated KubeVirt/CDI/storage."""

import asyncio
import subprocess
from pathlib import Path

from tests.integration.wukong_harness import StartWukong, WukongRun, condition
from wukong.devcluster import ControlPlane
from wukong.devcluster.simulator import WAIT_FOR_FIRST_CONSUMER_CLASS
from wukong.operator.api import FINALIZER, WUKONG_LABEL, WUKONGS
from wukong.runtime import NotFound, Object
from wukong.runtime.apis import (
    DATA_VOLUMES,
    NETWORK_ATTACHMENT_DEFINITIONS,
    VIRTUAL_MACHINE_INSTANCES,
    VIRTUAL_MACHINES,
)
from wukong.runtime.resources import PERSISTENT_VOLUME_CLAIMS

BRIDGE = '{"cniVersion": "0.3.1", "type": "bridge", "bridge": "br-data"}'
FULL_SPEC = {
    "cpu": 2,
    "memory": "2Gi",
    "networks": [
        {"name": "storage", "nadName": "shared-storage"},
        {"name": "data", "config": BRIDGE},
    ],
    "disks": [
        {"name": "root", "size": "1Gi"},
        {"name": "image", "size": "2Gi", "image": "docker://quay.io/containerdisks/fedora:40"},
        {"name": "scratch", "size": "1Gi", "storageClassName": WAIT_FOR_FIRST_CONSUMER_CLASS},
    ],
}


def _is_running(obj: Object) -> bool:
    return (obj.get("status") or {}).get("phase") == "Running"


async def _create_shared_nad(run: WukongRun) -> None:
    await run.create_nad("shared-storage", config='{"cniVersion": "0.3.1", "type": "macvlan"}')


async def _exists(run: WukongRun, resource: object, name: str) -> bool:
    try:
        await run.client.get(resource, name, namespace=run.namespace)  # type: ignore[arg-type]
    except NotFound:
        return False
    return True


async def test_full_wukong_reaches_running_with_status_conditions_and_columns(
    control_plane: ControlPlane, start_wukong: StartWukong, kubectl: Path
) -> None:
    run = await start_wukong()
    await _create_shared_nad(run)
    await run.create("web", FULL_SPEC)
    web = await run.wait_for("web", _is_running, what="web to be Running")

    status = web["status"]
    assert web["metadata"]["finalizers"] == [FINALIZER]
    assert status["vmName"] == "web"
    assert status["nodeName"] == "sim-node-1"
    assert status["observedGeneration"] == web["metadata"]["generation"]
    assert len(status["ipAddresses"]) == 3  # pod network + two Multus networks
    assert status["networks"] == [
        {"name": "storage", "nadName": "shared-storage", "created": False},
        {"name": "data", "nadName": "web-data", "created": True},
    ]
    claim = {"bound": True, "phase": "Bound"}
    assert status["volumes"] == [
        {"name": "root", "claimName": "web-root", **claim, "size": "1Gi", "capacity": "1Gi"},
        {
            "name": "image",
            "claimName": "web-image",
            "bound": True,
            "phase": "Succeeded",
            "progress": "100.0%",
            "size": "2Gi",
            "capacity": "2Gi",
        },
        {"name": "scratch", "claimName": "web-scratch", **claim, "size": "1Gi", "capacity": "1Gi"},
    ]
    for type in ("Ready", "NetworksConfigured", "VolumesBound"):
        assert condition(web, type)["status"] == "True", condition(web, type)
    assert condition(web, "Ready")["reason"] == "Running"

    # What it made, each owned by the Wukong; the reused NAD untouched.
    uid = web["metadata"]["uid"]
    owned = [
        (NETWORK_ATTACHMENT_DEFINITIONS, "web-data"),
        (PERSISTENT_VOLUME_CLAIMS, "web-root"),
        (PERSISTENT_VOLUME_CLAIMS, "web-scratch"),
        (DATA_VOLUMES, "web-image"),
        (VIRTUAL_MACHINES, "web"),
    ]
    for resource, name in owned:
        obj = await run.client.get(resource, name, namespace=run.namespace)
        refs = obj["metadata"]["ownerReferences"]
        assert [(r["kind"], r["uid"], r["controller"]) for r in refs] == [("Wukong", uid, True)]
        assert obj["metadata"]["labels"][WUKONG_LABEL] == "web"
    shared = await run.client.get(
        NETWORK_ATTACHMENT_DEFINITIONS, "shared-storage", namespace=run.namespace
    )
    assert "ownerReferences" not in shared["metadata"]

    vm = await run.client.get(VIRTUAL_MACHINES, "web", namespace=run.namespace)
    template = vm["spec"]["template"]["spec"]
    assert template["domain"]["cpu"] == {"cores": 2}
    assert template["domain"]["memory"] == {"guest": "2Gi"}
    assert {"name": "image", "dataVolume": {"name": "web-image"}} in template["volumes"]
    assert {"name": "storage", "multus": {"networkName": "shared-storage"}} in template["networks"]

    command = [str(kubectl), f"--kubeconfig={control_plane.kubeconfig}", "-n", run.namespace]
    table = await asyncio.to_thread(
        subprocess.run, [*command, "get", "wukong"], capture_output=True, text=True, check=True
    )
    header, row = table.stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "NODE", "READY", "AGE"]
    assert row.split()[:4] == ["web", "Running", "sim-node-1", "True"]

    reasons = [(e["type"], e["reason"]) for e in await run.events("web")]
    assert reasons.count(("Normal", "Created")) == 5  # NAD, 2 PVCs, DataVolume, VM
    assert ("Normal", "Running") in reasons
    assert not [r for r in reasons if r[0] == "Warning"]


async def test_delete_removes_what_it_created_keeps_the_reused_nad_even_after_manual_deletes(
    start_wukong: StartWukong,
) -> None:
    run = await start_wukong()
    await _create_shared_nad(run)
    await run.create("web", FULL_SPEC)
    await run.wait_for("web", _is_running, what="web to be Running")

    # Someone deletes dependents by hand first: they must not block the finalizer.
    await run.client.delete(NETWORK_ATTACHMENT_DEFINITIONS, "web-data", namespace=run.namespace)
    await run.client.delete(DATA_VOLUMES, "web-image", namespace=run.namespace)

    await run.client.delete(WUKONGS, "web", namespace=run.namespace)
    await run.wait_gone("web")

    for resource, name in [
        (VIRTUAL_MACHINES, "web"),
        (VIRTUAL_MACHINE_INSTANCES, "web"),
        (DATA_VOLUMES, "web-image"),
        (NETWORK_ATTACHMENT_DEFINITIONS, "web-data"),
    ]:
        assert not await _exists(run, resource, name), f"{resource.kind} {name} left behind"
    # Claims carry kubernetes.io/pvc-protection: they go once the VMI no longer uses them.
    for claim in ("web-root", "web-scratch", "web-image"):
        await run.wait_until(
            lambda claim=claim: _missing(run, PERSISTENT_VOLUME_CLAIMS, claim),
            what=f"claim {claim} to be deleted",
        )
    assert await _exists(run, NETWORK_ATTACHMENT_DEFINITIONS, "shared-storage")


async def test_delete_is_never_stuck_on_what_was_never_created_or_belongs_to_others(
    start_wukong: StartWukong,
) -> None:
    run = await start_wukong()
    # A claim with the name Wukong would use, made by someone else.
    await run.client.create(
        PERSISTENT_VOLUME_CLAIMS,
        {
            "metadata": {"name": "db-root", "namespace": run.namespace},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    spec = {
        "networks": [{"name": "missing", "nadName": "does-not-exist"}],
        "disks": [{"name": "root", "size": "1Gi"}, {"name": "data", "size": "1Gi"}],
    }
    await run.create("db", spec)
    await run.wait_for(
        "db",
        lambda obj: condition(obj, "Ready").get("reason") == "NetworkNotFound",
        what="db to report NetworkNotFound",
    )
    await run.client.delete(WUKONGS, "db", namespace=run.namespace)
    await run.wait_gone("db")
    assert await _exists(run, PERSISTENT_VOLUME_CLAIMS, "db-root")  # not ours: kept


async def test_resizing_a_disk_expands_its_claim(start_wukong: StartWukong) -> None:
    run = await start_wukong()
    spec = {"disks": [{"name": "root", "size": "1Gi"}]}
    await run.create("grow", spec)
    await run.wait_for("grow", _is_running, what="grow to be Running")

    grown = {"spec": {"disks": [{"name": "root", "size": "3Gi"}]}}
    await run.client.patch(WUKONGS, "grow", grown, namespace=run.namespace)

    async def expanded() -> bool:
        claim = await run.client.get(PERSISTENT_VOLUME_CLAIMS, "grow-root", namespace=run.namespace)
        return bool(
            claim["spec"]["resources"]["requests"]["storage"] == "3Gi"
            and claim["status"]["capacity"]["storage"] == "3Gi"
        )

    await run.wait_until(expanded, what="claim grow-root to be expanded to 3Gi")
    reasons = [e["reason"] for e in await run.events("grow")]
    assert "ExpandingVolume" in reasons
    grown_obj = await run.get("grow")
    assert grown_obj["status"]["observedGeneration"] == grown_obj["metadata"]["generation"]


async def _missing(run: WukongRun, resource: object, name: str) -> bool:
    return not await _exists(run, resource, name)


async def test_stopping_and_starting_the_vm(start_wukong: StartWukong) -> None:
    run = await start_wukong()
    await run.create("toggle", {"disks": [{"name": "root", "size": "1Gi"}]})
    await run.wait_for("toggle", _is_running, what="toggle to be Running")

    await run.client.patch(WUKONGS, "toggle", {"spec": {"running": False}}, namespace=run.namespace)
    stopped = await run.wait_for(
        "toggle",
        lambda obj: condition(obj, "Ready").get("reason") == "Stopped",
        what="toggle to be Stopped",
    )
    assert stopped["status"]["phase"] == "Pending"
    vm = await run.client.get(VIRTUAL_MACHINES, "toggle", namespace=run.namespace)
    assert vm["spec"]["running"] is False
    await run.wait_until(
        lambda: _missing(run, VIRTUAL_MACHINE_INSTANCES, "toggle"), what="the VMI to go"
    )

    await run.client.patch(WUKONGS, "toggle", {"spec": {"running": True}}, namespace=run.namespace)
    await run.wait_for("toggle", _is_running, what="toggle to run again")
