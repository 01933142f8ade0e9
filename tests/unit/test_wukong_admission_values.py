"""The Wukong validator with no API server: values it cannot read, names it would look
up, references it must refuse; each denial names the field."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s_client

from tests.unit.wukong_reviews import GVK
from wukong.operator.admission import WukongAdmission
from wukong.runtime import (
    Admission,
    AdmissionRequest,
    Client,
    Object,
    Store,
)


def wukong(name: str = "vm", *, uid: str = "uid-vm", **spec: Any) -> Object:
    return {
        "apiVersion": "vm.novasphere.dev/v1alpha1",
        "kind": "Wukong",
        "metadata": {"name": name, "namespace": "ns", "uid": uid},
        "spec": {"cpu": 1, "memory": "1Gi", **spec},
    }


def request(
    obj: Object | None,
    old: Object | None = None,
    *,
    operation: str = "UPDATE",
    client: Client,
    kind: dict[str, str] = GVK,
) -> AdmissionRequest:
    return AdmissionRequest(
        uid="u",
        operation=operation,
        group=kind["group"],
        kind=kind["kind"],
        namespace="ns",
        name="vm",
        object=obj,
        old_object=old,
        dry_run=False,
        timeout=10.0,
        deadline=asyncio.get_running_loop().time() + 10,
        client=client,
    )


@pytest.fixture
async def api() -> AsyncIterator[Client]:
    async with Client(k8s_client.ApiClient(configuration=k8s_client.Configuration())) as plain:
        yield plain


def admission(*nads: Object, classes: tuple[Object, ...] = ()) -> WukongAdmission:
    nad_store, class_store = Store(), Store()
    for nad in nads:
        nad_store.upsert(nad)
    for storage_class in classes:
        class_store.upsert(storage_class)
    return WukongAdmission(
        network_attachment_definitions=nad_store, storage_classes=class_store, claims=Store()
    )


@pytest.mark.parametrize(
    ("disks", "field"),
    [
        ([{"name": "root", "size": "1.2.3"}], "spec.disks[0].size: not a quantity: '1.2.3'"),
        ([{"name": "root", "size": "."}], "spec.disks[0].size: not a quantity: '.'"),
        ([{"name": "root", "size": "1e9999999Gi"}], "spec.disks[0].size: not a quantity"),
        ([{"name": "root", "size": "0"}], "spec.disks[0].size: must be greater than zero"),
        ([{"name": "root", "size": 5}], "spec.disks[0].size: must be a string"),
        ([{"name": "root"}], "spec.disks[0].size: must be a string"),
        ([{"name": "a", "size": "1Gi"}, "b"], "spec.disks[1]: must be an object"),
        ("disks", "spec.disks: must be a list"),
        (False, "spec.disks: must be a list"),  # found by the fuzzer: falsy is no empty list
        ({}, "spec.disks: must be a list"),
        (
            [{"name": "root", "size": "1Gi", "storageClassName": ["gold"]}],
            "spec.disks[0].storageClassName: must be a string",
        ),
    ],
)
async def test_an_update_with_a_value_that_cannot_be_read_is_denied_naming_the_field(
    api: Client, disks: object, field: str
) -> None:
    old = wukong(disks=[{"name": "root", "size": "1Gi"}])
    answer = await admission().validate(request(wukong(disks=disks), old, client=api))
    assert (answer.allowed, answer.reason, answer.code) == (False, "Invalid", 403)
    assert answer.message.startswith(field)


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({**wukong(), "spec": "big"}, "spec: must be an object"),
        ({**wukong(), "spec": 0}, "spec: must be an object"),
        (wukong(networks=""), "spec.networks: must be a list"),
        (wukong(memory="lots"), "spec.memory: not a quantity"),
        (wukong(cpu="2"), "spec.cpu: must be an integer"),
        (wukong(cpu=True), "spec.cpu: must be an integer"),
        (wukong(running="yes"), "spec.running: must be a boolean"),
        (wukong(networks=[{"name": 3}]), "spec.networks[0].name: must be a string"),
        (
            wukong(networks=[{"name": "a", "nadName": {"x": 1}}]),
            "spec.networks[0].nadName: must be a string",
        ),
        ({**wukong(), "metadata": {"name": 5}}, "metadata.name: must be a string"),
        # Names it would look up, which would otherwise become other API paths.
        (
            wukong(networks=[{"name": "a", "nadName": ".."}]),
            "spec.networks[0].nadName: '..' is not an object name",
        ),
        (
            wukong(networks=[{"name": "a", "nadName": "nad\n"}]),
            "spec.networks[0].nadName: 'nad\\n' is not an object name",
        ),
        (
            wukong(disks=[{"name": "a", "size": "1Gi", "storageClassName": "../secrets/x"}]),
            "spec.disks[0].storageClassName: '../secrets/x' is not an object name",
        ),
    ],
)
async def test_other_values_that_cannot_be_read_are_denied_naming_the_field(
    api: Client, obj: Object, field: str
) -> None:
    answer = await admission().validate(request(obj, operation="CREATE", client=api))
    assert (answer.allowed, answer.reason) == (False, "Invalid")
    assert answer.message.startswith(field)


async def test_an_old_object_that_cannot_be_read_checks_every_reference_as_new(
    api: Client,
) -> None:
    webhook = admission(nad("taken", owner("Wukong", "other", "uid-other")))
    networks = [{"name": "data", "nadName": "taken"}]
    unchanged = await webhook.validate(
        request(wukong(networks=networks), wukong(networks=networks), client=api)
    )
    assert unchanged.allowed  # only what an update changes is checked
    old = {**wukong(networks=networks), "spec": {"networks": "garbage"}}
    answer = await webhook.validate(request(wukong(networks=networks), old, client=api))
    assert (answer.allowed, answer.reason) == (False, "NetworkAttachmentDefinitionOfAnotherWukong")


@pytest.mark.parametrize(
    ("kind", "operation", "obj"),
    [
        ({"group": "", "version": "v1", "kind": "Pod"}, "CREATE", wukong()),
        ({**GVK, "group": "example.com"}, "CREATE", wukong()),
        (GVK, "CREATE", None),
        (GVK, "UPDATE", None),
    ],
)
async def test_a_request_for_another_resource_or_without_an_object_is_malformed(
    api: Client, kind: dict[str, str], operation: str, obj: Object | None
) -> None:
    answer = await admission().validate(request(obj, operation=operation, client=api, kind=kind))
    assert (answer.allowed, answer.reason, answer.code) == (False, "Malformed", 400)


def nad(name: str, *owners: dict[str, object]) -> Object:
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": "ns", "ownerReferences": list(owners)},
        "spec": {"config": '{"type": "bridge"}'},
    }


def owner(kind: str, name: str, uid: str, *, api_version: str = "vm.novasphere.dev/v1alpha1"):
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": True}


async def test_another_wukongs_network_attachment_definition_cannot_be_reused(
    api: Client,
) -> None:
    webhook = admission(
        nad("other-data", owner("Wukong", "other", "uid-other")),
        nad("mine-data", owner("Wukong", "vm", "uid-vm")),
        nad("shared", owner("Thing", "t", "uid-t", api_version="example.com/v1")),
        nad("plain"),
    )

    async def create(nad_name: str) -> Admission:
        obj = wukong(networks=[{"name": "a", "config": "{}"}, {"name": "b", "nadName": nad_name}])
        return await webhook.validate(request(obj, operation="CREATE", client=api))

    denied = await create("other-data")
    assert (denied.allowed, denied.reason) == (False, "NetworkAttachmentDefinitionOfAnotherWukong")
    assert denied.message.startswith(
        "spec.networks[1].nadName: NetworkAttachmentDefinition ns/other-data belongs to "
        "Wukong ns/other"
    )
    # Its own, one controlled by something else, and one nobody controls are reused.
    for name in ("mine-data", "shared", "plain"):
        assert (await create(name)).allowed, name
    # The same name made again is another Wukong (by uid).
    again = wukong(uid="uid-new", networks=[{"name": "b", "nadName": "mine-data"}])
    answer = await webhook.validate(request(again, operation="CREATE", client=api))
    assert answer.reason == "NetworkAttachmentDefinitionOfAnotherWukong"


async def test_a_request_in_no_namespace_that_can_exist_is_malformed(api: Client) -> None:
    obj = wukong()
    obj["metadata"]["namespace"] = ".."
    answer = await admission().validate(
        AdmissionRequest(
            **{**request(obj, operation="CREATE", client=api).__dict__, "namespace": None}
        )
    )
    assert (answer.reason, answer.message) == (
        "Invalid",
        "metadata.namespace: not a namespace's name",
    )
    answer = await admission().validate(
        AdmissionRequest(
            **{**request(wukong(), operation="CREATE", client=api).__dict__, "namespace": "a/b"}
        )
    )
    assert (answer.reason, answer.code) == ("Malformed", 400)


async def test_a_wukong_being_deleted_is_admitted_whatever_its_values(api: Client) -> None:
    obj = wukong(disks=[{"name": "root", "size": "1.2.3"}])
    obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    answer = await admission().validate(request(obj, wukong(), client=api))
    assert answer.allowed
