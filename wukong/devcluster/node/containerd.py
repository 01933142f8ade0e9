"""The node's container runtime: containerd (Debian's, with runc) and the pods' CNI bridge.

It runs inside the namespace, so the bridge `cni0` and every pod's interface
are made there; its root, state and socket live under `<state>/node/containerd`.
Images come from archives (`ctr images import`), never a registry; the sandbox
image is the locally built pause (see `wukong.devcluster.images`).
"""

import json
import shutil
import subprocess
from pathlib import Path

from wukong.devcluster import images, processes
from wukong.devcluster.binaries import Progress
from wukong.devcluster.errors import DevClusterError
from wukong.devcluster.node.layout import (
    CNI_BIN_DIR,
    NETNS,
    POD_CIDR,
    NodePaths,
    start_in_netns,
    wait_ready,
)
from wukong.devcluster.processes import Component

CONTAINERD = "containerd"


class Containerd:
    """Start containerd, load images into it, and empty it for `down`."""

    def __init__(self, paths: NodePaths, state_dir: Path) -> None:
        self.paths = paths
        self.component = Component(name=CONTAINERD, state_dir=state_dir)

    def start(self, pause: Path, progress: Progress) -> None:
        """Start containerd in the namespace, wait for its API, import the pause image."""
        progress(f"starting containerd in network namespace {NETNS}")
        self._write_config()
        self._write_cni_config()
        proc = start_in_netns(
            self.component,
            [
                shutil.which("containerd") or "containerd",
                "--config",
                str(self.paths.containerd_config),
            ],
        )
        wait_ready(self.component, proc, self._ready, what="containerd")
        archive = self.paths.images / "pause.tar"
        images.write_archive(images.pause_spec(pause), archive)
        self.import_image(archive)

    def running(self) -> bool:
        return processes.read_pid(self.component) is not None

    def import_image(self, archive: Path) -> None:
        """Load an image archive into containerd (namespace k8s.io)."""
        self._ctr("images", "import", str(archive))

    def remove_containers(self) -> int:
        """Kill and delete every container, so the next containerd starts with none."""
        listing = self._ctr("containers", "list", "--quiet", check=False)
        ids = listing.stdout.split()
        for container in ids:
            self._ctr("tasks", "kill", "--signal", "SIGKILL", container, check=False)
        for container in ids:
            self._ctr("tasks", "delete", "--force", container, check=False)
            self._ctr("containers", "delete", container, check=False)
        return len(ids)

    def _ready(self) -> bool:
        return self.paths.containerd_socket.is_socket() and (
            self._ctr("version", check=False).returncode == 0
        )

    def _ctr(self, *args: str, check: bool = True) -> "subprocess.CompletedProcess[str]":
        result = subprocess.run(
            ["ctr", "--address", str(self.paths.containerd_socket), "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise DevClusterError(
                f"ctr {' '.join(args[:2])} failed: {result.stderr.strip()[:300]}; "
                f"log: {self.component.log_file}"
            )
        return result

    def _write_config(self) -> None:
        paths = self.paths
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""\
version = 2
root = "{paths.containerd_root}"
state = "{paths.containerd_state}"

[grpc]
  address = "{paths.containerd_socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{paths.root / "containerd" / "opt"}"

[{cri}]
  # Built locally (no registry): see wukong.devcluster.images.
  sandbox_image = "{images.PAUSE_IMAGE}"
  # The VM's capability bounding set lacks CAP_SYS_RESOURCE, so runc cannot
  # lower a container's oom_score_adj below its parent's (the pause container
  # asks for -998); without this every sandbox fails to start.
  restrict_oom_score_adj = true
  # The pods' network namespaces are mounted under our state, not /var/run/netns.
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{paths.cni_conf_dir}"

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
"""
        paths.containerd_config.parent.mkdir(parents=True, exist_ok=True)
        paths.containerd_config.write_text(config)

    def _write_cni_config(self) -> None:
        gateway = POD_CIDR.rsplit(".", 1)[0] + ".1"
        conflist = {
            "cniVersion": "1.0.0",
            "name": "wukong-node",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    # Nothing leaves the namespace, so nothing needs masquerading.
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR, "gateway": gateway}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.paths.cni_data_dir),
                    },
                }
            ],
        }
        (self.paths.cni_conf_dir / "10-wukong.conflist").write_text(json.dumps(conflist, indent=2))
