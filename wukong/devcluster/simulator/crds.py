"""The other systems' APIs, as minimal CRDs, and the StorageClasses of the dev cluster.

KubeVirt, CDI and Multus each install CRDs in a real cluster; here they are
reduced to their group, names and a status subresource, with
`x-kubernetes-preserve-unknown-fields` instead of the full schemas, so objects
the operator writes are stored as written. StorageClasses are real built-in
objects: `standard` (Immediate binding, the default class) and
`local-wait` (WaitForFirstConsumer).
"""

from typing import Any

from wukong.devcluster.crds import create_if_missing, install_crds
from wukong.runtime import Client, Object
from wukong.runtime.apis import (
    DATA_VOLUMES,
    NETWORK_ATTACHMENT_DEFINITIONS,
    VIRTUAL_MACHINE_INSTANCE_MIGRATIONS,
    VIRTUAL_MACHINE_INSTANCES,
    VIRTUAL_MACHINES,
)
from wukong.runtime.resources import STORAGE_CLASSES, Resource

PROVISIONER = "sim.wukong.dev/hostpath"
IMMEDIATE_CLASS = "standard"
WAIT_FOR_FIRST_CONSUMER_CLASS = "local-wait"

_PHASE_COLUMN = {"name": "Phase", "type": "string", "jsonPath": ".status.phase"}
_AGE_COLUMN = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def _crd(
    resource: Resource,
    *,
    short_names: list[str],
    status: bool = True,
    columns: list[dict[str, str]] | None = None,
) -> Object:
    version: dict[str, Any] = {
        "name": resource.version,
        "served": True,
        "storage": True,
        "schema": {
            "openAPIV3Schema": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
            }
        },
    }
    if status:
        version["subresources"] = {"status": {}}
    if columns:
        version["additionalPrinterColumns"] = [*columns, _AGE_COLUMN]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{resource.plural}.{resource.group}"},
        "spec": {
            "group": resource.group,
            "scope": "Namespaced",
            "names": {
                "kind": resource.kind,
                "listKind": f"{resource.kind}List",
                "plural": resource.plural,
                "singular": resource.kind.lower(),
                "shortNames": short_names,
            },
            "versions": [version],
        },
    }


def infrastructure_crds() -> list[Object]:
    return [
        _crd(
            VIRTUAL_MACHINES,
            short_names=["vm", "vms"],
            columns=[
                {"name": "Status", "type": "string", "jsonPath": ".status.printableStatus"},
                {"name": "Ready", "type": "boolean", "jsonPath": ".status.ready"},
            ],
        ),
        _crd(
            VIRTUAL_MACHINE_INSTANCES,
            short_names=["vmi", "vmis"],
            columns=[
                _PHASE_COLUMN,
                {"name": "Node", "type": "string", "jsonPath": ".status.nodeName"},
            ],
        ),
        _crd(
            DATA_VOLUMES,
            short_names=["dv", "dvs"],
            columns=[
                _PHASE_COLUMN,
                {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
            ],
        ),
        _crd(
            VIRTUAL_MACHINE_INSTANCE_MIGRATIONS,
            short_names=["vmim", "vmims"],
            columns=[_PHASE_COLUMN, {"name": "VMI", "type": "string", "jsonPath": ".spec.vmiName"}],
        ),
        _crd(NETWORK_ATTACHMENT_DEFINITIONS, short_names=["net-attach-def"], status=False),
    ]


def storage_classes() -> list[Object]:
    def storage_class(name: str, mode: str, *, default: bool) -> Object:
        annotations = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
        return {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": name, "annotations": annotations},
            "provisioner": PROVISIONER,
            "volumeBindingMode": mode,
            "allowVolumeExpansion": True,
            "reclaimPolicy": "Delete",
        }

    return [
        storage_class(IMMEDIATE_CLASS, "Immediate", default=True),
        storage_class(WAIT_FOR_FIRST_CONSUMER_CLASS, "WaitForFirstConsumer", default=False),
    ]


async def install_infrastructure(client: Client) -> None:
    """Create the simulated systems' CRDs and the StorageClasses; safe to call again."""
    await install_crds(client, infrastructure_crds())
    for storage_class in storage_classes():
        await create_if_missing(client, STORAGE_CLASSES, storage_class)
