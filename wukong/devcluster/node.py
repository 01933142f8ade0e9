"""A real node for the local control plane: containerd, kubelet, kube-proxy, and the
controllers and scheduler that make Deployments and DaemonSets run on it.

Everything networked lives in one network namespace, `wukong-node`, so the host's
own network is never touched: containerd (and so the CNI bridge and every pod),
the kubelet, kube-proxy, kube-scheduler and kube-controller-manager run inside it
(`nsenter --net`, which keeps the host's mount namespace: the kubelet's volume
mounts must be seen by containerd). A veth pair links it to the host:

    host: wk-host 10.201.0.1/30  <->  wukong-node: wk-node 10.201.0.2/30 (node IP)
          pods 10.244.0.0/24 on bridge cni0, Services 10.96.0.0/24 (kube-proxy, iptables)

The namespace has no default route: nothing in it can send traffic beyond it.
The API server stays on the host's 127.0.0.1; a forwarder (`forward`) listens on
10.201.0.1 at the API server's port and is the `kubernetes` Service's endpoint
(the control plane runs with `--advertise-address=10.201.0.1`). The API server
reaches the kubelet at 10.201.0.2 for `kubectl logs/exec`.

What `up` changes on the host, and `down` restores:
- the network namespace and its veth pair (deleting the namespace removes the
  bridge, the pods' interfaces and every iptables rule the kubelet, kube-proxy
  and the CNI plugins made, all of which live in it), and the host's route to
  the Service IPs through it (so the API server reaches webhooks' Services);
- the sysctls the kubelet sets for itself (kernel.panic, kernel.panic_on_oops,
  vm.overcommit_memory, vm.panic_on_oom, kernel.keys.*): saved before the first
  start in `node.json`, written back by `down`;
- mounts under the state directory (pod volumes, container root filesystems,
  the pods' network namespaces): unmounted by `down`;
- the `/kubepods` cgroups in every hierarchy: removed by `down` once the pods'
  processes are gone.
Container images stay in containerd's root under the state directory, so the
next `up` finds them.

Only one node runs per machine: the kubelet owns `/kubepods`.
"""

import contextlib
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from wukong.devcluster import binaries, images, processes
from wukong.devcluster.binaries import Progress
from wukong.devcluster.cluster import ComponentStatus, ControlPlane, component_status
from wukong.devcluster.errors import DevClusterError
from wukong.devcluster.kubeconfig import write_kubeconfig
from wukong.devcluster.pki import SERVICE_CLUSTER_IP_RANGE, Pki
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

# Host sysctls the kubelet writes for itself (pkg/kubelet/cm setupKernelTunables).
KERNEL_TUNABLES = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
_CGROUP_ROOT = Path("/sys/fs/cgroup")
# Runs the command after it inside the namespace (the host's mount namespace kept).
IN_NETNS = ("nsenter", f"--net=/run/netns/{NETNS}", "--")
_KUBEPODS = "kubepods"
_STATE_FILE = "node.json"
# Which state directory's node holds the machine-wide parts (the namespace, the
# /kubepods cgroups, the saved sysctls): only that node's `down` touches them.
OWNER_FILE = Path("/run/wukong/dev-node-owner")
_START_TIMEOUT_SECONDS = 180.0

# Host commands the node needs, and the Debian package that brings each.
_HOST_TOOLS = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "conntrack": "conntrack",
    "ip": "iproute2",
    "nsenter": "util-linux",
}

CONTAINERD = "containerd"
KUBELET = "kubelet"
KUBE_PROXY = "kube-proxy"
SCHEDULER = "kube-scheduler"
CONTROLLER_MANAGER = "kube-controller-manager"
FORWARDER = "apiserver-forward"


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


class DevNode:
    """Start, stop and inspect the node attached to a control plane."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        state_dir = plane.config.state_dir
        self.paths = NodePaths(state_dir / "node")
        self._containerd = Component(name=CONTAINERD, state_dir=state_dir)
        self._kubelet = Component(name=KUBELET, state_dir=state_dir)
        self._proxy = Component(name=KUBE_PROXY, state_dir=state_dir)
        self._scheduler = Component(name=SCHEDULER, state_dir=state_dir)
        self._controller_manager = Component(name=CONTROLLER_MANAGER, state_dir=state_dir)
        self._forwarder = Component(name=FORWARDER, state_dir=state_dir, program="python")
        self._kubelet_started: datetime.datetime | None = None

    @property
    def _components(self) -> list[Component]:
        """In start order; stopped in reverse."""
        return [
            self._forwarder,
            self._containerd,
            self._controller_manager,
            self._scheduler,
            self._kubelet,
            self._proxy,
        ]

    @property
    def _state_file(self) -> Path:
        return self.plane.config.state_dir / _STATE_FILE

    @property
    def kubectl(self) -> Path:
        return binaries.kubectl_binary(progress=lambda _: None)

    # -- lifecycle -----------------------------------------------------------------

    def up(self, *, progress: Progress) -> None:
        """Create the namespace, start the node's processes, wait until the node is Ready."""
        if self.plane.config.node_address != HOST_ADDRESS:
            raise DevClusterError(
                "the control plane was started without a node; run `wukong dev down`, "
                "then `wukong dev up --node`"
            )
        _check_host(progress)
        if self._all_running() and self._node_ready():
            progress(f"node {NODE_NAME} already running")
            return
        self._check_no_other_node()
        node_dir = binaries.node_binaries(progress=progress)
        pause = binaries.pause_binary(progress=progress)
        try:
            self._claim_machine()
            self._start(node_dir, pause, progress)
        except BaseException:
            self.down(progress=lambda _: None)
            raise

    def _owns_machine(self) -> bool:
        try:
            return OWNER_FILE.read_text().strip() == str(self.plane.config.state_dir.resolve())
        except FileNotFoundError:
            return False

    def _claim_machine(self) -> None:
        OWNER_FILE.parent.mkdir(parents=True, exist_ok=True)
        OWNER_FILE.write_text(f"{self.plane.config.state_dir.resolve()}\n")

    def _start(self, node_dir: Path, pause: Path, progress: Progress) -> None:
        started = time.monotonic()
        self._save_host_state()
        self._create_netns(progress)
        pki = self.plane.pki
        for directory in (
            self.paths.root,
            self.paths.cni_conf_dir,
            self.paths.kubelet_dir,
            self.paths.pod_logs,
            self.paths.images,
        ):
            directory.mkdir(parents=True, exist_ok=True)
        port = self.plane.config.apiserver_port
        write_kubeconfig(self.paths.kubeconfig, server=f"https://{HOST_ADDRESS}:{port}", pki=pki)
        for component in self._components:
            component.log_file.unlink(missing_ok=True)

        progress(f"forwarding {HOST_ADDRESS}:{port} to the API server on 127.0.0.1:{port}")
        proc = processes.start(
            self._forwarder,
            [
                sys.executable,
                "-m",
                "wukong.devcluster.forward",
                HOST_ADDRESS,
                str(port),
                self.plane.config.host,
                str(port),
            ],
        )
        self._wait(self._forwarder, proc, self._forwarder_listening, what="the forwarder")

        progress(f"starting containerd in network namespace {NETNS}")
        self._write_containerd_config()
        self._write_cni_config()
        proc = self._start_in_netns(
            self._containerd,
            [
                shutil.which("containerd") or "containerd",
                "--config",
                str(self.paths.containerd_config),
            ],
        )
        self._wait(self._containerd, proc, self._containerd_ready, what="containerd")
        archive = self.paths.images / "pause.tar"
        images.write_archive(images.pause_spec(pause), archive)
        self.import_image(archive)

        progress("starting kube-controller-manager and kube-scheduler")
        proc = self._start_in_netns(
            self._controller_manager, self._controller_manager_argv(node_dir, pki)
        )
        proc = self._start_in_netns(self._scheduler, self._scheduler_argv(node_dir))

        progress(f"starting the kubelet (node {NODE_NAME}, {NODE_ADDRESS})")
        kubelet_config = self._write_kubelet_config(pki)
        # A Node object left from an earlier run still says Ready: only a
        # heartbeat from this kubelet counts.
        self._kubelet_started = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        proc = self._start_in_netns(
            self._kubelet,
            [
                str(node_dir / KUBELET),
                f"--config={kubelet_config}",
                f"--kubeconfig={self.paths.kubeconfig}",
                f"--root-dir={self.paths.kubelet_dir}",
                f"--cert-dir={self.paths.kubelet_dir / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_ADDRESS}",
                "--v=1",
            ],
        )
        self._wait(self._kubelet, proc, self._node_ready, what=f"node {NODE_NAME} to be Ready")

        progress("starting kube-proxy (iptables mode, inside the namespace)")
        proxy_config = self._write_proxy_config()
        proc = self._start_in_netns(
            self._proxy, [str(node_dir / KUBE_PROXY), f"--config={proxy_config}"]
        )
        self._wait(self._proxy, proc, self._proxy_healthy, what="kube-proxy /healthz")
        for component in (self._controller_manager, self._scheduler):
            if processes.read_pid(component) is None:
                raise DevClusterError(
                    f"{component.name} exited during start-up; log: {component.log_file}"
                )
        progress(f"node {NODE_NAME} ready in {time.monotonic() - started:.1f}s")

    def down(self, *, progress: Progress) -> None:
        """Stop the node and give the host back what `up` changed (see the module doc)."""
        for component in (
            self._proxy,
            self._kubelet,
            self._scheduler,
            self._controller_manager,
        ):
            if processes.stop(component):
                progress(f"stopped {component.name}")
        if processes.read_pid(self._containerd) is not None:
            removed = self._remove_containers()
            if removed:
                progress(f"removed {removed} containers")
        for component in (self._containerd, self._forwarder):
            if processes.stop(component):
                progress(f"stopped {component.name}")
        unmounted = _unmount_under(self.paths.root)
        if unmounted:
            progress(f"unmounted {unmounted} mounts under {self.paths.root}")
        shutil.rmtree(self.paths.containerd_state, ignore_errors=True)
        shutil.rmtree(self.paths.cni_data_dir, ignore_errors=True)
        shutil.rmtree(self.paths.kubelet_dir, ignore_errors=True)
        if not self._owns_machine():
            # Another node (or none) holds the namespace, cgroups and sysctls:
            # this cluster's own processes and files are all there is to undo.
            self._state_file.unlink(missing_ok=True)
            return
        self._kill_pod_processes()
        _unmount_under(self.paths.root)
        _remove_kubepods_cgroups()
        _remove_container_log_links(self.paths.pod_logs)
        if _netns_exists():
            subprocess.run(["ip", "netns", "delete", NETNS], check=False, capture_output=True)
            progress(f"deleted network namespace {NETNS} (its interfaces and iptables rules)")
        if _link_exists(HOST_IFACE):
            subprocess.run(["ip", "link", "delete", HOST_IFACE], check=False, capture_output=True)
        self._restore_host_state(progress)
        OWNER_FILE.unlink(missing_ok=True)

    def runtime_running(self) -> bool:
        """True if the node's containerd runs (images can be loaded)."""
        return processes.read_pid(self._containerd) is not None

    def present(self) -> bool:
        """True if `up` ran here and `down` has not finished since."""
        return self._state_file.is_file() or any(c.pid_file.is_file() for c in self._components)

    def status(self) -> list[ComponentStatus]:
        return [component_status(c) for c in self._components]

    def import_image(self, archive: Path) -> None:
        """Load an image archive into the node's containerd (namespace k8s.io)."""
        self._ctr("images", "import", str(archive))

    # -- host state --------------------------------------------------------------------

    def _save_host_state(self) -> None:
        if self._state_file.is_file():
            return  # keep what was there before the first `up`
        saved = {name: _read_sysctl(name) for name in KERNEL_TUNABLES}
        self._state_file.write_text(json.dumps({"sysctls": saved}, indent=2))

    def _restore_host_state(self, progress: Progress) -> None:
        try:
            saved = json.loads(self._state_file.read_text())["sysctls"]
        except (FileNotFoundError, ValueError, KeyError):
            return
        changed = []
        for name, value in saved.items():
            if value is not None and _read_sysctl(name) != value:
                Path("/proc/sys", name).write_text(value)
                changed.append(name.replace("/", "."))
        if changed:
            progress(f"restored sysctls {', '.join(changed)}")
        self._state_file.unlink()

    def _check_no_other_node(self) -> None:
        try:
            owner = OWNER_FILE.read_text().strip()
        except FileNotFoundError:
            owner = None
        if owner and not self._owns_machine():
            raise DevClusterError(
                f"another dev node runs on this machine (state in {owner}); one node per "
                f"machine: stop it with `wukong dev down --state-dir {owner}`"
            )
        if owner is None and _netns_exists():
            raise DevClusterError(
                f"network namespace {NETNS} exists but no dev node owns it; "
                f"delete it with `ip netns delete {NETNS}`"
            )
        for hierarchy in ("memory", "pids", "unified"):
            kubepods = _CGROUP_ROOT / hierarchy / _KUBEPODS
            if owner is None and kubepods.is_dir() and _cgroup_has_processes(kubepods):
                raise DevClusterError(
                    f"{kubepods} holds processes: another kubelet's pods run on this machine; "
                    "one node per machine"
                )

    # -- network namespace ---------------------------------------------------------------

    def _create_netns(self, progress: Progress) -> None:
        if _netns_exists():
            subprocess.run(["ip", "netns", "delete", NETNS], check=False, capture_output=True)
        progress(
            f"creating network namespace {NETNS}: {HOST_IFACE} {HOST_ADDRESS} <-> "
            f"{NODE_IFACE} {NODE_ADDRESS}"
        )
        for argv in (
            ["ip", "netns", "add", NETNS],
            [
                "ip",
                "link",
                "add",
                HOST_IFACE,
                "type",
                "veth",
                "peer",
                "name",
                NODE_IFACE,
                "netns",
                NETNS,
            ],
            ["ip", "addr", "add", f"{HOST_ADDRESS}/{LINK_PREFIX}", "dev", HOST_IFACE],
            ["ip", "link", "set", HOST_IFACE, "up"],
            ["ip", "-n", NETNS, "addr", "add", f"{NODE_ADDRESS}/{LINK_PREFIX}", "dev", NODE_IFACE],
            ["ip", "-n", NETNS, "link", "set", NODE_IFACE, "up"],
            ["ip", "-n", NETNS, "link", "set", "lo", "up"],
            # The API server calls webhooks at their Service's ClusterIP, as a real
            # control plane does: Service IPs are routed into the node, where
            # kube-proxy sends them on to the pods (the route goes with the veth).
            [
                "ip",
                "route",
                "add",
                SERVICE_CLUSTER_IP_RANGE,
                "via",
                NODE_ADDRESS,
                "dev",
                HOST_IFACE,
            ],
            # Processes on the node itself (the kubelet's probes, host-network
            # pods) reach Service IPs: kube-proxy rewrites them in OUTPUT, but only
            # after a route was found.
            ["ip", "-n", NETNS, "route", "add", SERVICE_CLUSTER_IP_RANGE, "via", HOST_ADDRESS],
            # Pods reach the host end (the API server forwarder) as the node: the
            # host has no route to the pod network and must not get one.
            [
                *IN_NETNS,
                "iptables",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-s",
                POD_CIDR,
                "-o",
                NODE_IFACE,
                "-j",
                "MASQUERADE",
            ],
            # Nothing leaves the namespace but for the forwarder's address: an
            # unallocated Service IP is refused here instead of reaching the host.
            [
                *IN_NETNS,
                "iptables",
                "-A",
                "OUTPUT",
                "-o",
                NODE_IFACE,
                "!",
                "-d",
                HOST_ADDRESS,
                "-j",
                "REJECT",
            ],
            [
                *IN_NETNS,
                "iptables",
                "-A",
                "FORWARD",
                "-o",
                NODE_IFACE,
                "!",
                "-d",
                HOST_ADDRESS,
                "-j",
                "REJECT",
            ],
        ):
            _run(argv)

    def _start_in_netns(self, component: Component, argv: list[str]) -> "subprocess.Popen[bytes]":
        # nsenter execs the program: the pid file names the component itself.
        return processes.start(component, [*IN_NETNS, *argv])

    # -- configuration files -----------------------------------------------------------------

    def _write_containerd_config(self) -> None:
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

    def _write_kubelet_config(self, pki: Pki) -> Path:
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
                "x509": {"clientCAFile": str(pki.ca_cert)},
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
        }
        path = self.paths.root / "kubelet-config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _write_proxy_config(self) -> Path:
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

    def _controller_manager_argv(self, node_dir: Path, pki: Pki) -> list[str]:
        return [
            str(node_dir / CONTROLLER_MANAGER),
            f"--kubeconfig={self.paths.kubeconfig}",
            f"--authentication-kubeconfig={self.paths.kubeconfig}",
            f"--authorization-kubeconfig={self.paths.kubeconfig}",
            # Published as kube-root-ca.crt in every namespace: the CA in pods' token volumes.
            f"--root-ca-file={pki.ca_cert}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--controllers=*",
        ]

    def _scheduler_argv(self, node_dir: Path) -> list[str]:
        return [
            str(node_dir / SCHEDULER),
            f"--kubeconfig={self.paths.kubeconfig}",
            f"--authentication-kubeconfig={self.paths.kubeconfig}",
            f"--authorization-kubeconfig={self.paths.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
        ]

    # -- readiness -----------------------------------------------------------------------------

    def _wait(
        self,
        component: Component,
        proc: "subprocess.Popen[bytes]",
        check: Callable[[], bool],
        *,
        what: str,
    ) -> None:
        processes.wait_started(
            component, proc, check, what=what, timeout=_START_TIMEOUT_SECONDS, interval=0.5
        )

    def _all_running(self) -> bool:
        return all(processes.read_pid(c) is not None for c in self._components)

    def _forwarder_listening(self) -> bool:
        import socket

        with (
            contextlib.suppress(OSError),
            socket.create_connection((HOST_ADDRESS, self.plane.config.apiserver_port), timeout=1),
        ):
            return True
        return False

    def _containerd_ready(self) -> bool:
        return self.paths.containerd_socket.is_socket() and (
            self._ctr("version", check=False).returncode == 0
        )

    def _node_ready(self) -> bool:
        body = self.plane.get(f"/api/v1/nodes/{NODE_NAME}")
        if body is None:
            return False
        conditions = json.loads(body).get("status", {}).get("conditions", [])
        for condition in conditions:
            if condition.get("type") == "Ready" and condition.get("status") == "True":
                heartbeat = datetime.datetime.fromisoformat(condition["lastHeartbeatTime"])
                return self._kubelet_started is None or heartbeat >= self._kubelet_started
        return False

    def _proxy_healthy(self) -> bool:
        result = subprocess.run(
            [
                *IN_NETNS,
                sys.executable,
                "-c",
                "import urllib.request,sys;"
                "urllib.request.urlopen('http://127.0.0.1:10256/healthz',timeout=2)",
            ],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    # -- containers ------------------------------------------------------------------------------

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
                f"log: {self._containerd.log_file}"
            )
        return result

    def _remove_containers(self) -> int:
        """Kill and delete every container, so the next containerd starts with none."""
        listing = self._ctr("containers", "list", "--quiet", check=False)
        ids = listing.stdout.split()
        for container in ids:
            self._ctr("tasks", "kill", "--signal", "SIGKILL", container, check=False)
        for container in ids:
            self._ctr("tasks", "delete", "--force", container, check=False)
            self._ctr("containers", "delete", container, check=False)
        return len(ids)

    def _kill_pod_processes(self) -> None:
        """SIGKILL whatever still runs in a pod cgroup (a shim killed before its task)."""
        for _ in range(50):
            pids = list(_pod_pids())
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)


# -- host helpers -----------------------------------------------------------------------------


def _check_host(progress: Progress) -> None:
    if os.geteuid() != 0:
        raise DevClusterError(
            "a dev node needs root (network namespace, cgroups, mounts); run as root"
        )
    missing = sorted({pkg for tool, pkg in _HOST_TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise DevClusterError(
            f"missing host packages for the dev node: {' '.join(missing)} "
            "(run `make setup` or apt-get install them)"
        )
    if not (CNI_BIN_DIR / "bridge").is_file():
        raise DevClusterError(
            f"no CNI bridge plugin in {CNI_BIN_DIR}; install containernetworking-plugins"
        )


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DevClusterError(f"`{' '.join(argv)}` failed: {result.stderr.strip()[:300]}")


def _netns_exists() -> bool:
    return Path("/run/netns", NETNS).exists()


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return None


def _mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Field 5 is the mount point, with spaces and the like octal-escaped.
        points.append(line.split()[4].encode().decode("unicode_escape"))
    return points


def _unmount_under(root: Path) -> int:
    prefix = str(root.resolve()) + "/"
    count = 0
    for point in sorted(
        (p for p in _mount_points() if p.startswith(prefix)), key=len, reverse=True
    ):
        if (
            subprocess.run(["umount", "-l", point], capture_output=True, check=False).returncode
            == 0
        ):
            count += 1
    return count


def _remove_container_log_links(pod_logs: Path) -> None:
    # The kubelet links each container's log into /var/log/containers (a fixed path).
    links = Path("/var/log/containers")
    if not links.is_dir():
        return
    for link in links.iterdir():
        with contextlib.suppress(OSError):
            if link.is_symlink() and os.readlink(link).startswith(str(pod_logs)):
                link.unlink()


def _kubepods_dirs() -> Iterator[Path]:
    for hierarchy in sorted(_CGROUP_ROOT.iterdir()):
        kubepods = hierarchy / _KUBEPODS
        if kubepods.is_dir():
            yield kubepods


def _cgroup_has_processes(cgroup: Path) -> bool:
    for procs in cgroup.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            if procs.read_text().strip():
                return True
    return False


def _pod_pids() -> Iterator[int]:
    seen: set[int] = set()
    for kubepods in _kubepods_dirs():
        for procs in kubepods.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                for line in procs.read_text().split():
                    pid = int(line)
                    if pid not in seen:
                        seen.add(pid)
                        yield pid


def _remove_kubepods_cgroups() -> None:
    for kubepods in _kubepods_dirs():
        # Deepest first: a cgroup directory can only be removed once it has no children.
        for directory in sorted(
            (p for p in kubepods.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            kubepods.rmdir()


@contextlib.contextmanager
def ephemeral_node_cluster(
    *, progress: Progress, state_dir: Path
) -> Iterator[tuple[ControlPlane, "DevNode"]]:
    """A control plane on free loopback ports with a node, for a `with` block (tests)."""
    from wukong.devcluster.cluster import ControlPlaneConfig

    plane = ControlPlane(
        ControlPlaneConfig(
            state_dir=state_dir,
            apiserver_port=processes.free_port(),
            etcd_port=processes.free_port(),
            etcd_peer_port=processes.free_port(),
            node_address=HOST_ADDRESS,
        )
    )
    node = DevNode(plane)
    try:
        plane.up(progress=progress)
        node.up(progress=progress)
        yield plane, node
    finally:
        node.down(progress=lambda _: None)
        plane.down(progress=lambda _: None)
