"""Checks of a spec that admission cannot make, run before any step acts.

The CRD's schema and CEL rules reject most bad specs at admission. What is
left needs parsing a string (a CNI config is JSON inside a string) or knowing
conventions of other systems (CDI image URL schemes); a spec failing here is
reported as a problem on the step it belongs to, and nothing is created for it.

`invalid_value` is the admission webhook's first look at a Wukong: the type of
every field it reads, and quantities it can compare. The API server has checked
these against the schema before it calls the webhook, but a request may come
from elsewhere, and a value this code cannot read is denied naming the field,
never admitted nor allowed to raise.
"""

import json
import re
from dataclasses import dataclass

from wukong.operator.api import DiskSpec, NetworkSpec, WukongSpec
from wukong.operator.steps import Problem
from wukong.runtime import Object, parse_quantity

IMAGE_SCHEMES = ("docker://", "http://", "https://")
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")


@dataclass(frozen=True)
class SpecProblems:
    networks: Problem | None
    disks: Problem | None


def validate(spec: WukongSpec) -> SpecProblems:
    network_problems = [_network_config(n) for n in spec.networks]
    disk_problems = [_image(d) for d in spec.disks]
    return SpecProblems(
        networks=next((p for p in network_problems if p), None),
        disks=next((p for p in disk_problems if p), None),
    )


def _network_config(network: NetworkSpec) -> Problem | None:
    config = network.config
    if config is None:
        return None
    try:
        parsed = json.loads(config)
    except json.JSONDecodeError as exc:
        return Problem("InvalidNetworkConfig", f"network {network.name}: config is not JSON: {exc}")
    if not isinstance(parsed, dict) or ("type" not in parsed and "plugins" not in parsed):
        return Problem(
            "InvalidNetworkConfig",
            f"network {network.name}: config must be a CNI object with 'type' or 'plugins'",
        )
    return None


def _image(disk: DiskSpec) -> Problem | None:
    image = disk.image
    if image is None or image.startswith(IMAGE_SCHEMES):
        return None
    return Problem(
        "InvalidImage",
        f"disk {disk.name}: image {image!r} must start with one of {', '.join(IMAGE_SCHEMES)}",
    )


def invalid_value(wukong: Object) -> str | None:
    """The first field of `wukong` whose value the webhook cannot read, as
    "<field>: <problem>"; None when every field it reads has its type (and sizes parse)."""
    metadata = wukong.get("metadata")
    if not isinstance(metadata, dict):
        return "metadata: must be an object"
    for key in ("name", "namespace"):
        if metadata.get(key) is not None and not isinstance(metadata[key], str):
            return f"metadata.{key}: must be a string"
    if metadata.get("namespace") and not is_object_name(metadata["namespace"]):
        return "metadata.namespace: not a namespace's name"
    spec = wukong.get("spec")
    if spec is None:
        spec = {}  # null is absent; false, 0 or "" are values of the wrong type
    if not isinstance(spec, dict):
        return "spec: must be an object"
    if "cpu" in spec and (not isinstance(spec["cpu"], int) or isinstance(spec["cpu"], bool)):
        return "spec.cpu: must be an integer"
    if "running" in spec and not isinstance(spec["running"], bool):
        return "spec.running: must be a boolean"
    if "memory" in spec and (problem := _quantity(spec["memory"])):
        return f"spec.memory: {problem}"
    for key, fields in (
        ("networks", {"name": True, "nadName": False, "config": False}),
        ("disks", {"name": True, "size": True, "storageClassName": False, "image": False}),
    ):
        items = spec.get(key)
        if items is None:
            items = []
        if not isinstance(items, list):
            return f"spec.{key}: must be a list"
        for index, item in enumerate(items):
            where = f"spec.{key}[{index}]"
            if not isinstance(item, dict):
                return f"{where}: must be an object"
            for name, required in fields.items():
                value = item.get(name)
                if (required or value is not None) and not isinstance(value, str):
                    return f"{where}.{name}: must be a string"
            # Names the webhook looks up: object names, so no path can be made of them.
            for name in ("nadName", "storageClassName"):
                if item.get(name) is not None and not is_object_name(item[name]):
                    return f"{where}.{name}: {item[name][:64]!r} is not an object name"
            if key == "disks" and (problem := _quantity(item["size"])):
                return f"{where}.size: {problem}"
    return None


def is_object_name(name: str) -> bool:
    """Whether `name` can name a Kubernetes object (a DNS subdomain)."""
    return len(name) <= 253 and _DNS_SUBDOMAIN.fullmatch(name) is not None


def _quantity(value: object) -> str | None:
    """Why `value` is no positive quantity, or None."""
    if not isinstance(value, str):
        return "must be a string"
    try:
        if parse_quantity(value) <= 0:
            return f"must be greater than zero, got {value!r}"
    except ValueError as exc:
        return str(exc)
    return None
