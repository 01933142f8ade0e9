"""The VirtualMachine the Wukong controller asks KubeVirt for, and what it reads back."""

from wukong.operator.api import NetworkStatus, VolumeStatus
from wukong.operator.kubevirt import _contains, desired_spec, guest_status
from wukong.operator.views import parse_wukong


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
