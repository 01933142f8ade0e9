"""Checks of a spec that admission cannot make, run before any step acts.

The CRD's schema and CEL rules reject most bad specs at admission. What is
left needs parsing a string (a CNI config is JSON inside a string) or knowing
conventions of other systems (CDI image URL schemes); a spec failing here is
reported as a problem on the step it belongs to, and nothing is created for it.
"""

import json
from dataclasses import dataclass
from typing import Any

from wukong.operator.steps import Problem

IMAGE_SCHEMES = ("docker://", "http://", "https://")


@dataclass(frozen=True)
class SpecProblems:
    networks: Problem | None
    disks: Problem | None


def validate(spec: dict[str, Any]) -> SpecProblems:
    network_problems = [_network_config(n) for n in spec.get("networks") or []]
    disk_problems = [_image(d) for d in spec.get("disks") or []]
    return SpecProblems(
        networks=next((p for p in network_problems if p), None),
        disks=next((p for p in disk_problems if p), None),
    )


def _network_config(network: dict[str, Any]) -> Problem | None:
    config = network.get("config")
    if config is None:
        return None
    try:
        parsed = json.loads(config)
    except json.JSONDecodeError as exc:
        return Problem(
            "InvalidNetworkConfig", f"network {network['name']}: config is not JSON: {exc}"
        )
    if not isinstance(parsed, dict) or ("type" not in parsed and "plugins" not in parsed):
        return Problem(
            "InvalidNetworkConfig",
            f"network {network['name']}: config must be a CNI object with 'type' or 'plugins'",
        )
    return None


def _image(disk: dict[str, Any]) -> Problem | None:
    image = disk.get("image")
    if image is None or image.startswith(IMAGE_SCHEMES):
        return None
    return Problem(
        "InvalidImage",
        f"disk {disk['name']}: image {image!r} must start with one of {', '.join(IMAGE_SCHEMES)}",
    )
