"""What the Wukong controller finds wrong in a spec that admission cannot: network
configs, image sources."""

from wukong.operator.api import WukongSpec
from wukong.operator.schema import from_json
from wukong.operator.validation import validate


def test_validation_finds_what_admission_cannot() -> None:
    spec = {
        "networks": [
            {"name": "ok", "config": '{"type": "bridge"}'},
            {"name": "reuse", "nadName": "x"},
            {"name": "bad", "config": "{not json"},
        ],
        "disks": [{"name": "root", "size": "1Gi", "image": "s3://bucket/disk"}],
    }
    problems = validate(from_json(WukongSpec, spec))
    assert problems.networks is not None and problems.networks.reason == "InvalidNetworkConfig"
    assert "network bad" in problems.networks.message
    assert problems.disks is not None and problems.disks.reason == "InvalidImage"
    plugins = {"networks": [{"name": "n", "config": '{"plugins": []}'}]}
    assert validate(from_json(WukongSpec, plugins)).networks is None
    not_an_object = {"networks": [{"name": "n", "config": "[1]"}]}
    assert validate(from_json(WukongSpec, not_an_object)).networks is not None
