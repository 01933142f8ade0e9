"""`down` gives the host back what the node changed, and the node comes up again.

Runs against the session's node: it takes the node down (the control plane
stays), checks the host, and brings the node back for the tests after it.
"""

import json
import subprocess
from pathlib import Path

from tests.node.conftest import NodeCluster
from wukong.devcluster import processes
from wukong.devcluster.node import HOST_IFACE, KERNEL_TUNABLES, NETNS, OWNER_FILE


def _sysctls() -> dict[str, str]:
    return {name: Path("/proc/sys", name).read_text().strip() for name in KERNEL_TUNABLES}


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve()) + "/"
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in lines if line.split()[4].startswith(prefix)]


def test_down_restores_the_host_and_up_starts_again(node_cluster: NodeCluster) -> None:
    node = node_cluster.node
    state_dir = node_cluster.plane.config.state_dir
    saved = json.loads((state_dir / "node.json").read_text())["sysctls"]
    # The kubelet did change the host while it ran (else this test proves nothing).
    assert _sysctls()["kernel/panic"] == "10"
    assert _sysctls()["vm/overcommit_memory"] == "1"
    assert _mounts_under(node.paths.root)
    assert Path("/sys/fs/cgroup/memory/kubepods").is_dir()

    node.down(progress=lambda _: None)

    assert _sysctls() == saved
    assert not Path("/run/netns", NETNS).exists()
    assert not Path("/sys/class/net", HOST_IFACE).exists()
    assert _mounts_under(node.paths.root) == []
    assert [c.name for c in node.status() if c.state != "stopped"] == []
    assert not any(Path("/sys/fs/cgroup", h, "kubepods").exists() for h in ("memory", "pids"))
    assert not OWNER_FILE.exists()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert NETNS not in listed.stdout
    for component in node.components:
        assert processes.read_pid(component) is None

    node.up(progress=lambda _: None)
    assert _sysctls()["kernel/panic"] == "10"
    nodes = node_cluster.kubectl("get", "nodes", "-o", "name")
    assert nodes.split() == ["node/wukong-node"]
