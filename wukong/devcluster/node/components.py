"""The node's other programs: the API server forwarder, kube-controller-manager,
kube-scheduler and kube-proxy.

The forwarder runs on the host: it listens on 10.201.0.1 at the API server's port
(the `kubernetes` Service's endpoint, `--advertise-address`) and passes
connections to the API server on 127.0.0.1. The others run inside the namespace
and reach the API server through it, with the node's kubeconfig.
"""

import contextlib
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from wukong.devcluster import processes
from wukong.devcluster.binaries import Progress
from wukong.devcluster.cluster import ControlPlane
from wukong.devcluster.errors import DevClusterError
from wukong.devcluster.node.layout import (
    HOST_ADDRESS,
    IN_NETNS,
    NODE_NAME,
    POD_CIDR,
    NodePaths,
    start_in_netns,
    wait_ready,
)
from wukong.devcluster.pki import SERVICE_CLUSTER_IP_RANGE
from wukong.devcluster.processes import Component

KUBE_PROXY = "kube-proxy"
SCHEDULER = "kube-scheduler"
CONTROLLER_MANAGER = "kube-controller-manager"
FORWARDER = "apiserver-forward"


class Forwarder:
    """The node's way to the API server: 10.201.0.1:<port> -> 127.0.0.1:<port>."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.component = Component(
            name=FORWARDER, state_dir=plane.config.state_dir, program="python"
        )

    def start(self, progress: Progress) -> None:
        port = self.plane.config.apiserver_port
        progress(f"forwarding {HOST_ADDRESS}:{port} to the API server on 127.0.0.1:{port}")
        argv = [sys.executable, "-m", "wukong.devcluster.forward", HOST_ADDRESS, str(port)]
        proc = processes.start(self.component, [*argv, self.plane.config.host, str(port)])
        wait_ready(self.component, proc, self._listening, what="the forwarder")

    def _listening(self) -> bool:
        with (
            contextlib.suppress(OSError),
            socket.create_connection((HOST_ADDRESS, self.plane.config.apiserver_port), timeout=1),
        ):
            return True
        return False


class Controllers:
    """kube-controller-manager and kube-scheduler: what makes workloads land on the node.

    Started without waiting (they need nothing from the node); `check_alive`
    tells, once the node is up, whether either exited on the way.
    """

    def __init__(self, paths: NodePaths, plane: ControlPlane) -> None:
        self.paths = paths
        self.plane = plane
        state_dir = plane.config.state_dir
        self.controller_manager = Component(name=CONTROLLER_MANAGER, state_dir=state_dir)
        self.scheduler = Component(name=SCHEDULER, state_dir=state_dir)

    def start(self, node_dir: Path, progress: Progress) -> None:
        progress("starting kube-controller-manager and kube-scheduler")
        start_in_netns(self.controller_manager, self._controller_manager_argv(node_dir))
        start_in_netns(self.scheduler, self._scheduler_argv(node_dir))

    def check_alive(self) -> None:
        for component in (self.controller_manager, self.scheduler):
            if processes.read_pid(component) is None:
                raise DevClusterError(
                    f"{component.name} exited during start-up; log: {component.log_file}"
                )

    def _client_flags(self) -> list[str]:
        kubeconfig = self.paths.kubeconfig
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
        ]

    def _controller_manager_argv(self, node_dir: Path) -> list[str]:
        return [
            str(node_dir / CONTROLLER_MANAGER),
            *self._client_flags(),
            # Published as kube-root-ca.crt in every namespace: the CA in pods' token volumes.
            f"--root-ca-file={self.plane.pki.ca_cert}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--controllers=*",
        ]

    def _scheduler_argv(self, node_dir: Path) -> list[str]:
        return [
            str(node_dir / SCHEDULER),
            *self._client_flags(),
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
        ]


class KubeProxy:
    """kube-proxy in iptables mode, its rules inside the namespace."""

    def __init__(self, paths: NodePaths, state_dir: Path) -> None:
        self.paths = paths
        self.component = Component(name=KUBE_PROXY, state_dir=state_dir)

    def start(self, node_dir: Path, progress: Progress) -> None:
        progress("starting kube-proxy (iptables mode, inside the namespace)")
        config = self._write_config()
        proc = start_in_netns(self.component, [str(node_dir / KUBE_PROXY), f"--config={config}"])
        wait_ready(self.component, proc, self._healthy, what="kube-proxy /healthz")

    def _healthy(self) -> bool:
        # Its health port is on the namespace's loopback: asked from inside.
        probe = (
            "import urllib.request,sys;"
            "urllib.request.urlopen('http://127.0.0.1:10256/healthz',timeout=2)"
        )
        result = subprocess.run(
            [*IN_NETNS, sys.executable, "-c", probe], capture_output=True, check=False
        )
        return result.returncode == 0

    def _write_config(self) -> Path:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {"kubeconfig": str(self.paths.kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "clusterCIDR": POD_CIDR,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            # 0 leaves the kernel's conntrack settings alone: the table size and
            # hash are global, not per namespace.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        path = self.paths.root / "kube-proxy-config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path
