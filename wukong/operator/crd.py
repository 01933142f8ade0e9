"""The CustomResourceDefinitions of `Wukong` and `WukongSet`, built from the API types."""

from typing import Any

import yaml

from wukong.operator.api import GROUP, KIND, VERSION, WUKONGS, WukongSpec, WukongStatus
from wukong.operator.names import NAME_RULES
from wukong.operator.schema import schema_of
from wukong.operator.wukongset_api import SET_KIND, WUKONGSETS, WukongSetSpec, WukongSetStatus
from wukong.operator.wukongset_names import SET_NAME_RULES


def wukong_crd() -> dict[str, Any]:
    spec = schema_of(WukongSpec)
    spec["default"] = {}  # so an empty spec still gets every field's default
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{WUKONGS.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": WUKONGS.plural,
                "singular": KIND.lower(),
                "shortNames": ["wk"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Node", "type": "string", "jsonPath": ".status.nodeName"},
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A virtual machine with its networks and disks.",
                            "x-kubernetes-validations": NAME_RULES,
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": schema_of(WukongStatus),
                            },
                        }
                    },
                }
            ],
        },
    }


def wukongset_crd() -> dict[str, Any]:
    spec = schema_of(WukongSetSpec)
    spec["properties"]["scaleInPolicy"]["default"] = {}  # its order's default is stored
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{WUKONGSETS.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": SET_KIND,
                "listKind": f"{SET_KIND}List",
                "plural": WUKONGSETS.plural,
                "singular": SET_KIND.lower(),
                "shortNames": ["wks"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        # `kubectl scale wukongset/x --replicas=N`, and autoscalers.
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": [
                        {"name": "Desired", "type": "integer", "jsonPath": ".spec.replicas"},
                        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
                        {
                            "name": "Migrating",
                            "type": "integer",
                            "jsonPath": ".status.migratingReplicas",
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A scalable set of Wukongs whose scale-in never "
                            "removes a live migrating member.",
                            "x-kubernetes-validations": SET_NAME_RULES,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": schema_of(WukongSetStatus),
                            },
                        }
                    },
                }
            ],
        },
    }


def operator_crds() -> list[dict[str, Any]]:
    """Every CRD the operator serves, in the order they are installed."""
    return [wukong_crd(), wukongset_crd()]


def render_crd(crd: dict[str, Any] | None = None) -> str:
    """`crd` (the Wukong CRD by default) as YAML."""
    return yaml.safe_dump(crd if crd is not None else wukong_crd(), sort_keys=False)
