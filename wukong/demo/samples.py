"""Sample Wukongs: what the demo applies and the drill's faults create."""

from wukong.devcluster.simulator import WAIT_FOR_FIRST_CONSUMER_CLASS
from wukong.runtime import Object

_BRIDGE = '{"cniVersion": "0.3.1", "type": "bridge", "bridge": "br-%s"}'
FEDORA = "docker://quay.io/containerdisks/fedora:40"


def web_server(name: str) -> Object:
    """Two created networks, a root claim, an imported image and a late-binding scratch disk."""
    return {
        "cpu": 2,
        "memory": "2Gi",
        "networks": [
            {"name": "front", "config": _BRIDGE % f"{name}-f"},
            {"name": "back", "config": _BRIDGE % f"{name}-b"},
        ],
        "disks": [
            {"name": "root", "size": "10Gi"},
            {"name": "image", "size": "20Gi", "image": FEDORA},
            {"name": "scratch", "size": "5Gi", "storageClassName": WAIT_FOR_FIRST_CONSUMER_CLASS},
        ],
    }


def small(name: str) -> Object:
    return {"cpu": 1, "memory": "1Gi", "disks": [{"name": "root", "size": "5Gi"}]}


DEMO_WUKONGS: dict[str, Object] = {
    "web-1": web_server("web-1"),
    "web-2": web_server("web-2"),
    "cache-1": small("cache-1"),
}
