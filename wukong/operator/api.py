"""The `Wukong` API types (vm.novasphere.dev/v1alpha1), the single source of the CRD.

What admission can check is checked there, so a bad spec is rejected with a
message instead of reaching the controller: quantities parse, names are DNS
labels and unique within their list (list-type `map` keyed by name), a network
either reuses a NetworkAttachmentDefinition or carries a config to create one,
a disk's storage class and image never change and its size never shrinks.
"""

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from wukong.operator.names import child_name_rule
from wukong.operator.schema import Schema, spec_field
from wukong.runtime.resources import Resource

GROUP = "vm.novasphere.dev"
VERSION = "v1alpha1"
KIND = "Wukong"
WUKONGS = Resource(group=GROUP, version=VERSION, plural="wukongs", kind=KIND)

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_MAX_ITEMS = 16


def _quantity_rules(what: str) -> list[dict[str, str]]:
    return [
        {"rule": "isQuantity(self)", "message": f"{what} must be a quantity such as 10Gi"},
        {
            "rule": "!isQuantity(self) || quantity(self).isGreaterThan(quantity('0'))",
            "message": f"{what} must be greater than zero",
        },
    ]


class Phase(StrEnum):
    PENDING = "Pending"
    CREATING = "Creating"
    RUNNING = "Running"
    MIGRATING = "Migrating"
    ERROR = "Error"
    DELETING = "Deleting"


@dataclass(frozen=True)
class NetworkSpec:
    """A network the VM joins through Multus."""

    SCHEMA: ClassVar[Schema] = {
        "x-kubernetes-validations": [
            {
                "rule": "has(self.nadName) != has(self.config)",
                "message": "set exactly one of nadName (reuse) and config (create)",
            }
        ]
    }

    name: str = spec_field(
        description="Network name, unique within the Wukong: lowercase letters and digits "
        "(a DNS label without '-').",
        pattern=_DNS_LABEL,
        maxLength=63,
        **{"x-kubernetes-validations": [child_name_rule("network")]},
    )
    nad_name: str | None = spec_field(
        description="Reuse this existing NetworkAttachmentDefinition in the Wukong's namespace. "
        "Wukong never deletes a NetworkAttachmentDefinition it reused.",
        default=None,
        minLength=1,
        maxLength=253,
    )
    config: str | None = spec_field(
        description="CNI configuration (JSON) of a NetworkAttachmentDefinition that Wukong "
        "creates as <wukong>-<name>, owns and deletes with the Wukong.",
        default=None,
        minLength=1,
        maxLength=65536,
    )


@dataclass(frozen=True)
class DiskSpec:
    """A disk: a PersistentVolumeClaim, or a CDI DataVolume when `image` is set."""

    # `self == oldSelf` on a field only runs when both have it; these also
    # refuse adding or removing the field on an existing disk.
    SCHEMA: ClassVar[Schema] = {
        "x-kubernetes-validations": [
            {
                "rule": f"has(self.{field}) == has(oldSelf.{field})",
                "message": f"{field} is immutable: it cannot be added to or removed from an "
                "existing disk",
            }
            for field in ("image", "storageClassName")
        ]
    }

    name: str = spec_field(
        description="Disk name, unique within the Wukong: lowercase letters and digits "
        "(a DNS label without '-'); the claim is named <wukong>-<name>.",
        pattern=_DNS_LABEL,
        maxLength=63,
        **{"x-kubernetes-validations": [child_name_rule("disk")]},
    )
    size: str = spec_field(
        description="Requested capacity, e.g. 10Gi. It may grow (the claim is expanded) "
        "but never shrink.",
        maxLength=64,
        **{
            "x-kubernetes-validations": [
                *_quantity_rules("size"),
                {
                    "rule": "!isQuantity(self) || !isQuantity(oldSelf) || "
                    "!quantity(self).isLessThan(quantity(oldSelf))",
                    "message": "disk size can only grow",
                },
            ]
        },
    )
    storage_class_name: str | None = spec_field(
        description="StorageClass of the claim; the cluster default when unset. Immutable.",
        default=None,
        maxLength=253,
        **{
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "storageClassName is immutable"}
            ]
        },
    )
    image: str | None = spec_field(
        description="Import this image (registry URL) into a CDI DataVolume instead of an "
        "empty claim. Immutable.",
        default=None,
        minLength=1,
        maxLength=2048,
        **{
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "image is immutable"}
            ]
        },
    )


@dataclass(frozen=True)
class WukongSpec:
    """Desired state of a Wukong VM."""

    cpu: int = spec_field(description="Virtual CPU cores.", default=1, minimum=1, maximum=64)
    memory: str = spec_field(
        description="Guest memory, e.g. 2Gi.",
        default="1Gi",
        maxLength=64,
        **{"x-kubernetes-validations": _quantity_rules("memory")},
    )
    running: bool = spec_field(description="Whether the VM should run.", default=True)
    networks: list[NetworkSpec] = spec_field(
        description="Networks, by unique name.",
        default=[],
        maxItems=_MAX_ITEMS,
        **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    disks: list[DiskSpec] = spec_field(
        description="Disks, by unique name.",
        default=[],
        maxItems=_MAX_ITEMS,
        **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )


@dataclass(frozen=True)
class NetworkStatus:
    """A network as configured."""

    name: str = spec_field(description="Network name from the spec.")
    nad_name: str | None = spec_field(
        description="The NetworkAttachmentDefinition used.", default=None
    )
    created: bool | None = spec_field(
        description="True if Wukong created (and will delete) it.", default=None
    )


@dataclass(frozen=True)
class VolumeStatus:
    """A disk's claim as observed."""

    name: str = spec_field(description="Disk name from the spec.")
    claim_name: str | None = spec_field(description="PVC or DataVolume name.", default=None)
    bound: bool | None = spec_field(
        description="Bound, or waiting for its first consumer (counts as ready).", default=None
    )
    phase: str | None = spec_field(
        description="The claim's phase, or the DataVolume's (e.g. PendingPopulation, "
        "ImportInProgress, Succeeded).",
        default=None,
    )
    progress: str | None = spec_field(
        description="Import progress reported by CDI, e.g. 45.00%.", default=None
    )
    size: str | None = spec_field(description="The size the spec requests.", default=None)
    capacity: str | None = spec_field(
        description="The capacity the claim has (below `size` until an expansion is done).",
        default=None,
    )


@dataclass(frozen=True)
class MigrationStatus:
    """A live migration of the VM in progress (a KubeVirt VirtualMachineInstanceMigration)."""

    name: str = spec_field(description="The VirtualMachineInstanceMigration.")
    phase: str | None = spec_field(description="Its phase, e.g. Scheduling, Running.", default=None)
    source_node: str | None = spec_field(description="The node it leaves.", default=None)
    target_node: str | None = spec_field(
        description="The node it moves to, once chosen.", default=None
    )


@dataclass(frozen=True)
class Condition:
    """A standard Kubernetes condition."""

    type: str = spec_field(description="Ready, NetworksConfigured or VolumesBound.")
    status: str = spec_field(
        description="True, False or Unknown.", enum=["True", "False", "Unknown"]
    )
    reason: str | None = spec_field(description="Machine-readable CamelCase reason.", default=None)
    message: str | None = spec_field(description="Human-readable detail.", default=None)
    last_transition_time: str | None = spec_field(
        description="When the status last changed.", default=None, format="date-time"
    )
    observed_generation: int | None = spec_field(
        description="The spec generation this condition describes.", default=None
    )


@dataclass(frozen=True)
class WukongStatus:
    """Observed state of a Wukong VM."""

    phase: str | None = spec_field(
        description="Pending, Creating, Running, Migrating, Error or Deleting.",
        default=None,
        enum=[phase.value for phase in Phase],
    )
    networks: list[NetworkStatus] | None = spec_field(description="Networks.", default=None)
    volumes: list[VolumeStatus] | None = spec_field(description="Disks' claims.", default=None)
    vm_name: str | None = spec_field(description="The KubeVirt VirtualMachine.", default=None)
    node_name: str | None = spec_field(description="Node running the VM.", default=None)
    migration: MigrationStatus | None = spec_field(
        description="The live migration in progress, if any.", default=None
    )
    ip_addresses: list[str] | None = spec_field(description="Guest IP addresses.", default=None)
    observed_generation: int | None = spec_field(
        description="The spec generation last reconciled.", default=None
    )
    conditions: list[Condition] | None = spec_field(
        description="Ready, NetworksConfigured, VolumesBound.",
        default=None,
        **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


# Set on the Wukong while it owns things that must be cleaned up before it goes.
FINALIZER = f"{GROUP}/finalizer"
# Set on everything the controller creates: the Wukong's name, for lookups by selector.
WUKONG_LABEL = f"{GROUP}/wukong"
