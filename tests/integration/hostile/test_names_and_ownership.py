"""Names at their limits and objects Wukong does not own, against the real API server.

The CRD refuses every Wukong whose derived names could not be valid, saying
the limit; a Wukong at the limit works and is deletable. An object of a
derived name that the Wukong does not control is reported as `NameConflict`
and never written: its spec, labels and owners stay as they were while the
Wukong lives and after it is deleted. Writes name the uid they mean, so a replacement of
the same name is refused by the server.
"""

import asyncio
from typing import Any

import pytest

from tests.integration.wukong_harness import StartWukong, WukongRun, condition
from wukong.operator.api import WUKONGS
from wukong.runtime import Client, Conflict, Invalid, NotFound, Object
from wukong.runtime.apis import NETWORK_ATTACHMENT_DEFINITIONS, VIRTUAL_MACHINES
from wukong.runtime.resources import CONFIGMAPS, PERSISTENT_VOLUME_CLAIMS, Resource

BRIDGE = '{"cniVersion": "0.3.1", "type": "bridge", "bridge": "br-x"}'


def _wukong(namespace: str, name: str, spec: Object) -> Object:
    return {
        "apiVersion": WUKONGS.api_version,
        "kind": WUKONGS.kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


@pytest.mark.parametrize(
    ("name", "spec", "says"),
    [
        ("w" * 64, {}, "at most 63 characters"),
        ("dotted.name", {}, "must be a DNS label"),
        ("w" * 59, {"disks": [{"name": "root", "size": "1Gi"}]}, "<wukong>-<disk>"),
        ("w" * 60, {"networks": [{"name": "net", "config": BRIDGE}]}, "<wukong>-<network>"),
        ("ok", {"disks": [{"name": "os-disk", "size": "1Gi"}]}, "a disk name has no '-'"),
        ("ok", {"networks": [{"name": "multus-net", "nadName": "x"}]}, "network name has no"),
    ],
)
async def test_the_crd_refuses_names_that_cannot_fit_and_says_the_limit(
    client: Client, namespace: str, infrastructure: None, name: str, spec: Object, says: str
) -> None:
    with pytest.raises(Invalid) as refused:
        await client.create(WUKONGS, _wukong(namespace, name, spec))
    assert says in refused.value.message


@pytest.mark.parametrize("field", ["image", "storageClassName"])
async def test_adding_image_or_class_to_an_existing_disk_is_refused(
    client: Client, namespace: str, infrastructure: None, field: str
) -> None:
    await client.create(
        WUKONGS, _wukong(namespace, "grow", {"disks": [{"name": "root", "size": "1Gi"}]})
    )
    value = "docker://registry.example/os:1" if field == "image" else "standard"
    patch = {"spec": {"disks": [{"name": "root", "size": "1Gi", field: value}]}}
    with pytest.raises(Invalid) as refused:
        await client.patch(WUKONGS, "grow", patch, namespace=namespace)
    assert f"{field} is immutable" in refused.value.message
    stored = await client.get(WUKONGS, "grow", namespace=namespace)
    assert field not in stored["spec"]["disks"][0]


async def test_a_wukong_at_the_name_limit_runs_and_is_deleted(start_wukong: StartWukong) -> None:
    run = await start_wukong()
    longest = "a" * 63  # no dependents but the VM: the name alone may use all 63
    with_disk = "b" * 58  # "<58>-root" is 63
    await run.create(longest, {})
    await run.create(with_disk, {"disks": [{"name": "root", "size": "1Gi"}]})
    for name in (longest, with_disk):
        await run.wait_for(name, _running, what=f"{len(name)}-character Wukong to run")
    claim = await run.client.get(
        PERSISTENT_VOLUME_CLAIMS, f"{with_disk}-root", namespace=run.namespace
    )
    assert len(claim["metadata"]["name"]) == 63
    for name in (longest, with_disk):
        await run.client.delete(WUKONGS, name, namespace=run.namespace)
    for name in (longest, with_disk):
        await run.wait_gone(name, timeout=60)


def _running(obj: Object) -> bool:
    return (obj.get("status") or {}).get("phase") == "Running"


def _foreign_vm(namespace: str, name: str) -> Object:
    """A halted VM of 7 cores with its own claim, made by a person before the Wukong."""
    return {
        "apiVersion": VIRTUAL_MACHINES.api_version,
        "kind": VIRTUAL_MACHINES.kind,
        "metadata": {"name": name, "namespace": namespace, "labels": {"team": "db"}},
        "spec": {
            "running": False,
            "template": {
                "spec": {
                    "domain": {"cpu": {"cores": 7}, "devices": {"disks": []}},
                    "volumes": [
                        {"name": "data", "persistentVolumeClaim": {"claimName": "db-data"}}
                    ],
                }
            },
        },
    }


async def _unchanged(client: Client, resource: Resource, before: Object) -> None:
    """`before` is still there as its owner made it: spec (and so generation), labels,
    annotations and owner references. (Its status is its own controller's to write:
    the simulated KubeVirt reports a halted VM's printable status.)"""
    metadata = before["metadata"]
    now = await client.get(resource, metadata["name"], namespace=metadata["namespace"])
    assert now["metadata"]["uid"] == metadata["uid"]
    assert now["metadata"].get("generation") == metadata.get("generation")
    assert now.get("spec") == before.get("spec")
    assert now["metadata"].get("annotations") == metadata.get("annotations")
    assert now["metadata"].get("labels") == metadata.get("labels")
    assert now["metadata"].get("ownerReferences") == metadata.get("ownerReferences")


def _conflicted(obj: Object) -> bool:
    ready = condition(obj, "Ready")
    return (
        ready.get("status") == "False"
        and ready.get("reason") == "NameConflict"
        and (obj.get("status") or {}).get("phase") == "Error"
    )


async def test_a_foreign_vm_of_the_wukongs_name_is_a_conflict_and_never_touched(
    start_wukong: StartWukong,
) -> None:
    run = await start_wukong()
    vm = await run.client.create(VIRTUAL_MACHINES, _foreign_vm(run.namespace, "db"))
    await run.create("db", {"cpu": 1, "disks": [{"name": "root", "size": "1Gi"}]})
    obj = await run.wait_for("db", _conflicted, what="NameConflict on the foreign VM")
    message = condition(obj, "Ready")["message"]
    assert "VirtualMachine db" in message and "no owner" in message, message
    assert "NameConflict" in await run.warnings("db")
    # Several reconciles later it is still reported, never Running, and the VM untouched.
    await asyncio.sleep(2)
    obj = await run.get("db")
    assert obj["status"]["phase"] == "Error"
    assert obj["status"].get("nodeName") is None
    await _unchanged(run.client, VIRTUAL_MACHINES, vm)
    await run.client.delete(WUKONGS, "db", namespace=run.namespace)
    await run.wait_gone("db", timeout=60)
    await _unchanged(run.client, VIRTUAL_MACHINES, vm)


async def test_foreign_claim_and_nad_are_named_in_the_conflict_and_kept(
    start_wukong: StartWukong,
) -> None:
    run = await start_wukong()
    await run.create_nad("web-net")
    nad = await run.client.get(NETWORK_ATTACHMENT_DEFINITIONS, "web-net", namespace=run.namespace)
    claim = await run.client.create(PERSISTENT_VOLUME_CLAIMS, _claim(run.namespace, "app-root"))
    await run.create("web", {"networks": [{"name": "net", "config": BRIDGE}]})
    await run.create("app", {"disks": [{"name": "root", "size": "1Gi"}]})
    for name, existing in (
        ("web", "NetworkAttachmentDefinition web-net"),
        ("app", "PersistentVolumeClaim app-root"),
    ):
        obj = await run.wait_for(name, _conflicted, what=f"NameConflict on {name}")
        message = condition(obj, "Ready")["message"]
        assert existing in message and "no owner" in message, message
    for name in ("web", "app"):
        await run.client.delete(WUKONGS, name, namespace=run.namespace)
    for name in ("web", "app"):
        await run.wait_gone(name, timeout=60)
    await _unchanged(run.client, NETWORK_ATTACHMENT_DEFINITIONS, nad)
    await _unchanged(run.client, PERSISTENT_VOLUME_CLAIMS, claim)


def _claim(namespace: str, name: str) -> Object:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


async def test_a_nad_another_wukong_created_cannot_be_reused(start_wukong: StartWukong) -> None:
    run: WukongRun = await start_wukong()
    await run.create("maker", {"networks": [{"name": "net", "config": BRIDGE}]})
    await run.wait_for("maker", _running, what="maker to run")
    await run.create("user", {"networks": [{"name": "net", "nadName": "maker-net"}]})
    obj = await run.wait_for(
        "user",
        lambda o: condition(o, "NetworksConfigured").get("reason") == "NetworkOwnedByWukong",
        what="user to report NetworkOwnedByWukong",
    )
    assert "Wukong maker" in condition(obj, "NetworksConfigured")["message"]
    assert obj["status"]["phase"] == "Error"


async def test_writes_name_the_uid_they_mean(client: Client, namespace: str) -> None:
    """What the finalizer's deletes and the steps' patches rely on: the server refuses a
    delete whose uid, or a merge patch whose resourceVersion, is not the object's."""
    body: dict[str, Any] = {"metadata": {"name": "same", "namespace": namespace}, "data": {}}
    old = await client.create(CONFIGMAPS, body)
    await client.delete(CONFIGMAPS, "same", namespace=namespace)
    replacement = await client.create(CONFIGMAPS, body)
    stale = old["metadata"]["uid"]
    with pytest.raises(Conflict):
        await client.delete(CONFIGMAPS, "same", namespace=namespace, precondition_uid=stale)
    with pytest.raises(Conflict):
        patch = {"metadata": {"resourceVersion": old["metadata"]["resourceVersion"]}, "data": {}}
        await client.patch(CONFIGMAPS, "same", patch, namespace=namespace)
    kept = await client.get(CONFIGMAPS, "same", namespace=namespace)
    assert kept["metadata"]["resourceVersion"] == replacement["metadata"]["resourceVersion"]
    await client.delete(
        CONFIGMAPS, "same", namespace=namespace, precondition_uid=replacement["metadata"]["uid"]
    )
    with pytest.raises(NotFound):
        await client.get(CONFIGMAPS, "same", namespace=namespace)
