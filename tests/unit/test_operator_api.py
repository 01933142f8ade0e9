"""The CRD generated from the API types: documented, structural, camelCase."""

from typing import Any

from wukong.operator.crd import wukong_crd
from wukong.operator.schema import json_name


def _walk(schema: dict[str, Any], path: str) -> list[str]:
    """Paths of properties without a description (kubectl explain would be empty)."""
    missing = []
    for name, prop in (schema.get("properties") or {}).items():
        here = f"{path}.{name}"
        if "description" not in prop:
            missing.append(here)
        missing += _walk(prop, here)
        if prop.get("type") == "array":
            missing += _walk(prop["items"], here + "[]")
    return missing


def test_every_spec_and_status_field_is_documented() -> None:
    root = wukong_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(root["properties"]["spec"], "spec") == []
    assert _walk(root["properties"]["status"], "status") == []


def test_field_names_and_lists_keyed_by_name() -> None:
    spec = wukong_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    disks = spec["properties"]["disks"]
    assert disks["x-kubernetes-list-map-keys"] == ["name"]
    assert set(disks["items"]["properties"]) == {"name", "size", "storageClassName", "image"}
    assert disks["items"]["required"] == ["name", "size"]
    assert json_name("storage_class_name") == "storageClassName"
