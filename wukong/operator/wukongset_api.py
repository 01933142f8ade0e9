"""The `WukongSet` API types (vm.novasphere.dev/v1alpha1): a scalable set of Wukongs.

A WukongSet keeps `replicas` Wukongs made from its `template`, named
`<set>-<ordinal>`. Its scale-in never removes a member that is live
migrating (`scalein`). The template's spec is the Wukong spec itself
(`api.WukongSpec`): one schema, so a template that the CRD admits makes a
Wukong the Wukong CRD admits.

What admission checks here: the selector matches the template's labels and
never changes (members are found by owner, the selector is what `kubectl
scale` and autoscalers read), and the set's name leaves room for the names
its members derive (`wukongset_names.SET_NAME_RULES`).
"""

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from wukong.operator.api import GROUP, VERSION, Condition, WukongSpec
from wukong.operator.schema import Schema, spec_field
from wukong.runtime.resources import Resource

SET_KIND = "WukongSet"
WUKONGSETS = Resource(group=GROUP, version=VERSION, plural="wukongsets", kind=SET_KIND)

# A label value (apimachinery's validation.IsValidLabelValue).
_LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_MAX_LABELS = 64


def _labels() -> Schema:
    return {
        "minProperties": 1,
        "maxProperties": _MAX_LABELS,
        "additionalProperties": {"type": "string", "maxLength": 63, "pattern": _LABEL_VALUE},
    }


# Set on the WukongSet while it has members to delete before it goes.
SET_FINALIZER = f"{GROUP}/members"
# Set on every member: the name of its set (besides the template's labels).
WUKONGSET_LABEL = f"{GROUP}/wukongset"


class ScaleInOrder(StrEnum):
    # Members that are not Ready go first, then the highest ordinal (the newest name).
    NOT_READY_THEN_NEWEST = "NotReadyThenNewest"


@dataclass(frozen=True)
class LabelSelector:
    """Which Wukongs the set counts as its members: labels they all carry."""

    match_labels: dict[str, str] = spec_field(
        description="Labels every member carries; the template's labels must include them.",
        **_labels(),
    )


@dataclass(frozen=True)
class TemplateMetadata:
    """What every member carries in its metadata."""

    labels: dict[str, str] = spec_field(
        description="Labels of every member; they include the selector's.",
        **_labels(),
    )


@dataclass(frozen=True)
class WukongTemplate:
    """The Wukong each member is made from."""

    metadata: TemplateMetadata = spec_field(description="Labels of every member.")
    spec: WukongSpec = spec_field(description="The spec of every member: a Wukong's spec.")


@dataclass(frozen=True)
class ScaleInPolicy:
    """Which members go when the set scales in. A member that is live migrating
    (phase Migrating, or an unfinished VirtualMachineInstanceMigration of its
    instance) never goes: the set waits for its migration to end."""

    order: str = spec_field(
        description="NotReadyThenNewest: members that are not Ready first, then the "
        "highest ordinal.",
        default=ScaleInOrder.NOT_READY_THEN_NEWEST.value,
        enum=[order.value for order in ScaleInOrder],
    )


@dataclass(frozen=True, kw_only=True)
class WukongSetSpec:
    """Desired state of a WukongSet."""

    SCHEMA: ClassVar[Schema] = {
        "x-kubernetes-validations": [
            {
                "rule": "self.selector.matchLabels.all(k, k in self.template.metadata.labels "
                "&& self.template.metadata.labels[k] == self.selector.matchLabels[k])",
                "message": "selector.matchLabels must match template.metadata.labels",
                "fieldPath": ".selector",
            }
        ]
    }

    replicas: int = spec_field(description="How many members.", default=1, minimum=0)
    selector: LabelSelector = spec_field(
        description="Labels of the members (immutable).",
        **{
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "selector is immutable"}
            ]
        },
    )
    template: WukongTemplate = spec_field(description="The Wukong each member is made from.")
    scale_in_policy: ScaleInPolicy | None = spec_field(
        description="Which members go first when the set scales in.", default=None
    )
    max_unavailable: int = spec_field(
        description="How many members may be unavailable at once while members are brought "
        "to the template (a template change rolled out, a member edited by hand reverted).",
        default=1,
        minimum=1,
    )


@dataclass(frozen=True)
class WukongSetStatus:
    """Observed state of a WukongSet."""

    replicas: int | None = spec_field(
        description="Members that exist and are not being deleted.", default=None
    )
    ready_replicas: int | None = spec_field(description="Members that are Ready.", default=None)
    migrating_replicas: int | None = spec_field(
        description="Members that are live migrating.", default=None
    )
    available_replicas: int | None = spec_field(
        description="Members that are Ready and whose status has caught up with their spec "
        "(what a rollout's maxUnavailable counts).",
        default=None,
    )
    updated_replicas: int | None = spec_field(
        description="Members made from the current template, their spec the template's.",
        default=None,
    )
    template_hash: str | None = spec_field(
        description="The hash of the current template, as labelled on up-to-date members.",
        default=None,
    )
    observed_generation: int | None = spec_field(
        description="The spec generation last reconciled.", default=None
    )
    selector: str | None = spec_field(
        description="The selector as a string (the scale subresource's labelSelectorPath).",
        default=None,
    )
    conditions: list[Condition] | None = spec_field(
        description="Ready, ScalingBlocked, RollingUpdate.",
        default=None,
        **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
