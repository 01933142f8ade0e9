"""Pure pieces of the Wukong controller: quantities, spec validation, the VM template, settings."""

from decimal import Decimal

import pytest

from wukong.operator.api import NetworkStatus, VolumeStatus, WukongSpec
from wukong.operator.kubevirt import _contains, desired_spec, guest_status
from wukong.operator.run import OperatorSettings
from wukong.operator.schema import from_json
from wukong.operator.validation import validate
from wukong.operator.views import parse_wukong
from wukong.runtime import parse_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("10Gi", Decimal(10 * 2**30)),
        ("500M", Decimal(500 * 10**6)),
        ("1.5e3", Decimal(1500)),
        ("100m", Decimal("0.1")),
        ("2", Decimal(2)),
    ],
)
def test_quantities(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_quantity_order_across_suffixes() -> None:
    assert parse_quantity("1Gi") > parse_quantity("1G")
    assert parse_quantity("1024Mi") == parse_quantity("1Gi")
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity("lots")


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


def test_vm_template_follows_the_spec() -> None:
    wukong = parse_wukong(
        {
            "metadata": {"name": "web"},
            "spec": {
                "cpu": 4,
                "memory": "8Gi",
                "running": False,
                "disks": [
                    {"name": "root", "size": "1Gi"},
                    {"name": "img", "size": "1Gi", "image": "docker://x"},
                ],
            },
        }
    )
    spec = desired_spec(
        wukong,
        networks=[NetworkStatus(name="data", nad_name="web-data")],
        volumes=[
            VolumeStatus(name="root", claim_name="web-root"),
            VolumeStatus(name="img", claim_name="web-img"),
        ],
    )
    template = spec["template"]["spec"]
    assert spec["running"] is False
    assert template["domain"]["cpu"] == {"cores": 4}
    assert template["volumes"] == [
        {"name": "root", "persistentVolumeClaim": {"claimName": "web-root"}},
        {"name": "img", "dataVolume": {"name": "web-img"}},
    ]
    assert template["networks"][1] == {"name": "data", "multus": {"networkName": "web-data"}}
    assert spec["template"]["metadata"]["labels"] == {"vm.novasphere.dev/wukong": "web"}


def test_defaulted_fields_are_not_differences_but_changed_ones_are() -> None:
    wanted = {"running": True, "template": {"spec": {"domain": {"cpu": {"cores": 2}}}}}
    defaulted = {
        "running": True,
        "template": {"spec": {"domain": {"cpu": {"cores": 2, "sockets": 1}, "machine": {}}}},
    }
    assert _contains(defaulted, wanted)
    changed = {"running": True, "template": {"spec": {"domain": {"cpu": {"cores": 4}}}}}
    assert not _contains(changed, wanted)
    assert not _contains({"list": [1, 2, 3]}, {"list": [1, 2]})


def test_guest_status_collects_addresses_once() -> None:
    vmi = {
        "status": {
            "phase": "Running",
            "nodeName": "n1",
            "interfaces": [
                {"name": "default", "ipAddress": "10.0.0.1", "ipAddresses": ["10.0.0.1"]},
                {"name": "data", "ipAddress": "192.168.1.2"},
            ],
        }
    }
    status = guest_status(vmi)
    assert (status.phase, status.node_name) == ("Running", "n1")
    assert status.ip_addresses == ["10.0.0.1", "192.168.1.2"]
    assert guest_status(None).phase is None


@pytest.mark.parametrize(
    ("workers", "given", "limit"),
    [(4, None, 2), (5, None, 3), (1, None, 1), (4, 4, 4), (8, 1, 1)],
)
def test_one_namespace_gets_half_the_workers_unless_told(
    workers: int, given: int | None, limit: int
) -> None:
    settings = OperatorSettings(
        max_concurrent_reconciles=workers, max_concurrent_reconciles_per_namespace=given
    )
    assert settings.per_namespace_limit == limit
