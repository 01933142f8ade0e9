"""The node's kubelet: its configuration for this machine kind, its start, and Ready.

It runs inside the namespace at the node's address (the API server reaches it
at 10.201.0.2:10250 for `kubectl logs/exec`), talks to containerd over the
socket under the state directory, and writes the sysctls, cgroups and mounts
that `host` undoes.
"""

import datetime
import json
from pathlib import Path
from typing import Any

import yaml

from wukong.devcluster.binaries import Progress
from wukong.devcluster.cluster import ControlPlane
from wukong.devcluster.node.layout import (
    NODE_ADDRESS,
    NODE_NAME,
    NodePaths,
    start_in_netns,
    wait_ready,
)
from wukong.devcluster.processes import Component

KUBELET = "kubelet"


class Kubelet:
    """Start the kubelet and tell when the node it registers is Ready."""

    def __init__(self, paths: NodePaths, plane: ControlPlane) -> None:
        self.paths = paths
        self.plane = plane
        self.component = Component(name=KUBELET, state_dir=plane.config.state_dir)
        self._started: datetime.datetime | None = None

    def start(self, node_dir: Path, progress: Progress) -> None:
        """Start the kubelet and wait until the Node reports Ready from this kubelet."""
        progress(f"starting the kubelet (node {NODE_NAME}, {NODE_ADDRESS})")
        config = self._write_config()
        # A Node object left from an earlier run still says Ready: only a
        # heartbeat from this kubelet counts.
        self._started = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        proc = start_in_netns(
            self.component,
            [
                str(node_dir / KUBELET),
                f"--config={config}",
                f"--kubeconfig={self.paths.kubeconfig}",
                f"--root-dir={self.paths.kubelet_dir}",
                f"--cert-dir={self.paths.kubelet_dir / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_ADDRESS}",
                "--v=1",
            ],
        )
        wait_ready(self.component, proc, self.node_ready, what=f"node {NODE_NAME} to be Ready")

    def node_ready(self) -> bool:
        """The Node is Ready, by a heartbeat since this kubelet started (if it did here)."""
        body = self.plane.get(f"/api/v1/nodes/{NODE_NAME}")
        if body is None:
            return False
        conditions = json.loads(body).get("status", {}).get("conditions", [])
        for condition in conditions:
            if condition.get("type") == "Ready" and condition.get("status") == "True":
                heartbeat = datetime.datetime.fromisoformat(condition["lastHeartbeatTime"])
                return self._started is None or heartbeat >= self._started
        return False

    def _write_config(self) -> Path:
        config: dict[str, Any] = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # This machine kind runs cgroups v1 (with a v2 hierarchy beside it),
            # which the kubelet refuses unless told otherwise; no systemd manages it.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "failSwapOn": False,
            # A pod's Secret and ConfigMap volumes follow their objects at each
            # sync: 10 s instead of a minute, so a rotated certificate arrives soon.
            "syncFrequency": "10s",
            "containerRuntimeEndpoint": f"unix://{self.paths.containerd_socket}",
            "address": NODE_ADDRESS,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.plane.pki.ca_cert)},
            },
            "authorization": {"mode": "Webhook"},
            "podLogsDir": str(self.paths.pod_logs),
            # No DNS server is reachable from the namespace; pods get none.
            "resolvConf": "",
            "clusterDomain": "cluster.local",
            # A developer's disk may be fuller than the kubelet likes: never evict
            # pods or delete images for disk pressure on a dev node.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "0%",
                "nodefs.inodesFree": "0%",
                "imagefs.available": "0%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "staticPodPath": "",
            # A dev-node setting: a crash-looping container waits 1 s before each
            # restart instead of 10 s doubling up to five minutes, so tests see
            # many restarts of one pod in seconds (one every 2 s or so, with the
            # kubelet's relist and the start). KubeletCrashLoopBackOffMax: beta,
            # on by default since v1.35.
            "crashLoopBackOff": {"maxContainerRestartPeriod": "1s"},
        }
        path = self.paths.root / "kubelet-config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path
