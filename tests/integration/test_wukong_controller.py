"""The Wukong controller on the real API server, with simulated KubeVirt/CDI/storage."""

import asyncio
import subprocess

from tests.integration.wukong_harness import StartWukong, WukongRun, condition
from wukong.devcluster import ControlPlane
from wukong.devcluster.simulator import WAIT_FOR_FIRST_CONSUMER_CLASS
from wukong.operator.api import FINALIZER, WUKONG_LABEL
from wukong.operator.resources import (
    DATA_VOLUMES,
    NETWORK_ATTACHMENT_DEFINITIONS,
    PERSISTENT_VOLUME_CLAIMS,
    VIRTUAL_MACHINES,
)
from wukong.runtime.client import Object
from wukong.runtime.errors import NotFound

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
    await run.client.create(
        NETWORK_ATTACHMENT_DEFINITIONS,
        {
            "apiVersion": NETWORK_ATTACHMENT_DEFINITIONS.api_version,
            "kind": NETWORK_ATTACHMENT_DEFINITIONS.kind,
            "metadata": {"name": "shared-storage", "namespace": run.namespace},
            "spec": {"config": '{"cniVersion": "0.3.1", "type": "macvlan"}'},
        },
    )


async def _exists(run: WukongRun, resource: object, name: str) -> bool:
    try:
        await run.client.get(resource, name, namespace=run.namespace)  # type: ignore[arg-type]
    except NotFound:
        return False
    return True


async def test_full_wukong_reaches_running_with_status_conditions_and_columns(
    control_plane: ControlPlane, start_wukong: StartWukong
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
    assert status["volumes"] == [
        {"name": "root", "claimName": "web-root", "bound": True},
        {"name": "image", "claimName": "web-image", "bound": True},
        {"name": "scratch", "claimName": "web-scratch", "bound": True},
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

    kubectl = ["kubectl", f"--kubeconfig={control_plane.kubeconfig}", "-n", run.namespace]
    table = await asyncio.to_thread(
        subprocess.run, [*kubectl, "get", "wukong"], capture_output=True, text=True, check=True
    )
    header, row = table.stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "NODE", "READY", "AGE"]
    assert row.split()[:4] == ["web", "Running", "sim-node-1", "True"]

    reasons = [(e["type"], e["reason"]) for e in await run.events("web")]
    assert reasons.count(("Normal", "Created")) == 5  # NAD, 2 PVCs, DataVolume, VM
    assert ("Normal", "Running") in reasons
    assert not [r for r in reasons if r[0] == "Warning"]
