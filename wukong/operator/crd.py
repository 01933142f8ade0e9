"""The CustomResourceDefinition for `Wukong`, built from the API types."""

from typing import Any

import yaml

from wukong.operator.api import GROUP, KIND, VERSION, WUKONGS, WukongSpec, WukongStatus
from wukong.operator.names import NAME_RULES
from wukong.operator.schema import schema_of


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


def render_crd() -> str:
    return yaml.safe_dump(wukong_crd(), sort_keys=False)
