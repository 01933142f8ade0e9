"""The node's names, addresses and files, and how each of its processes is started and awaited."""

import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path

from wukong.devcluster import processes
from wukong.devcluster.errors import DevClusterError
from wukong.devcluster.processes import Component

NETNS = "wukong-node"
HOST_IFACE = "wk-host"
NODE_IFACE = "wk-node"
HOST_ADDRESS = "10.201.0.1"
NODE_ADDRESS = "10.201.0.2"
LINK_PREFIX = 30
POD_CIDR = "10.244.0.0/24"
NODE_NAME = "wukong-node"
CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
# Runs the command after it inside the namespace (the host's mount namespace kept).
IN_NETNS = ("nsenter", f"--net=/run/netns/{NETNS}", "--")
_START_TIMEOUT_SECONDS = 180.0


@dataclass(frozen=True)
class NodePaths:
    """Where the node keeps its files, all under `<state>/node`."""

    root: Path

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd" / "config.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_data_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def kubeconfig(self) -> Path:
        """The kubeconfig the node's components use: the API server through the link."""
        return self.root / "kubeconfig"

    @property
    def images(self) -> Path:
        return self.root / "images"


def start_in_netns(component: Component, argv: list[str]) -> "subprocess.Popen[bytes]":
    """Start a component inside the namespace; nsenter execs it, so the pid file names it."""
    return processes.start(component, [*IN_NETNS, *argv])


# Wait until a check holds for a component just started (one-line errors naming its log).
wait_ready = functools.partial(processes.wait_started, timeout=_START_TIMEOUT_SECONDS, interval=0.5)


def run(argv: list[str]) -> None:
    """Run a host command that must succeed; its error output in a one-line error."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DevClusterError(f"`{' '.join(argv)}` failed: {result.stderr.strip()[:300]}")
