"""DevNode: the node's components composed into up, down and status."""

import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from wukong.devcluster import binaries, processes
from wukong.devcluster.binaries import Progress
from wukong.devcluster.cluster import (
    ComponentStatus,
    ControlPlane,
    component_status,
    ephemeral_control_plane,
)
from wukong.devcluster.errors import DevClusterError
from wukong.devcluster.kubeconfig import write_kubeconfig
from wukong.devcluster.node import host, netns
from wukong.devcluster.node.components import Controllers, Forwarder, KubeProxy
from wukong.devcluster.node.containerd import Containerd
from wukong.devcluster.node.kubelet import Kubelet
from wukong.devcluster.node.layout import HOST_ADDRESS, NODE_NAME, NodePaths
from wukong.devcluster.processes import Component

_STATE_FILE = "node.json"
# How long a test run waits for another run's node before it gives up: about
# one full `make test` of the node tests.
EPHEMERAL_WAIT = 30 * 60.0


class DevNode:
    """Start, stop and inspect the node attached to a control plane."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        state_dir = plane.config.state_dir
        self.paths = NodePaths(state_dir / "node")
        self._forwarder = Forwarder(plane)
        self._containerd = Containerd(self.paths, state_dir)
        self._controllers = Controllers(self.paths, plane)
        self._kubelet = Kubelet(self.paths, plane)
        self._proxy = KubeProxy(self.paths, state_dir)

    @property
    def components(self) -> list[Component]:
        """The node's processes in start order; stopped in reverse."""
        return [
            self._forwarder.component,
            self._containerd.component,
            self._controllers.controller_manager,
            self._controllers.scheduler,
            self._kubelet.component,
            self._proxy.component,
        ]

    @property
    def _state_file(self) -> Path:
        return self.plane.config.state_dir / _STATE_FILE

    @property
    def kubectl(self) -> Path:
        return binaries.kubectl_binary(progress=lambda _: None)

    def up(self, *, progress: Progress) -> None:
        """Create the namespace, start the node's processes, wait until the node is Ready."""
        if self.plane.config.node_address != HOST_ADDRESS:
            raise DevClusterError(
                "the control plane was started without a node; run `wukong dev down`, "
                "then `wukong dev up --node`"
            )
        host.check_host()
        if self._all_running() and self._kubelet.node_ready():
            progress(f"node {NODE_NAME} already running")
            return
        state_dir = self.plane.config.state_dir
        host.check_no_other_node(state_dir)
        node_dir = binaries.node_binaries(progress=progress)
        pause = binaries.pause_binary(progress=progress)
        try:
            host.claim_machine(state_dir)
            self._start(node_dir, pause, progress)
        except BaseException:
            self.down(progress=lambda _: None)
            raise

    def _start(self, node_dir: Path, pause: Path, progress: Progress) -> None:
        started = time.monotonic()
        host.save_sysctls(self._state_file)
        netns.create(progress)
        paths = self.paths
        for directory in (
            paths.root,
            paths.cni_conf_dir,
            paths.kubelet_dir,
            paths.pod_logs,
            paths.images,
        ):
            directory.mkdir(parents=True, exist_ok=True)
        server = f"https://{HOST_ADDRESS}:{self.plane.config.apiserver_port}"
        write_kubeconfig(paths.kubeconfig, server=server, pki=self.plane.pki)
        for component in self.components:
            component.log_file.unlink(missing_ok=True)
        self._forwarder.start(progress)
        self._containerd.start(pause, progress)
        self._controllers.start(node_dir, progress)
        self._kubelet.start(node_dir, progress)
        self._proxy.start(node_dir, progress)
        self._controllers.check_alive()
        progress(f"node {NODE_NAME} ready in {time.monotonic() - started:.1f}s")

    def down(self, *, progress: Progress) -> None:
        """Stop the node and give the host back what `up` changed (see the package doc)."""
        for component in (
            self._proxy.component,
            self._kubelet.component,
            self._controllers.scheduler,
            self._controllers.controller_manager,
        ):
            if processes.stop(component):
                progress(f"stopped {component.name}")
        if self._containerd.running():
            removed = self._containerd.remove_containers()
            if removed:
                progress(f"removed {removed} containers")
        for component in (self._containerd.component, self._forwarder.component):
            if processes.stop(component):
                progress(f"stopped {component.name}")
        unmounted = host.unmount_under(self.paths.root)
        if unmounted:
            progress(f"unmounted {unmounted} mounts under {self.paths.root}")
        shutil.rmtree(self.paths.containerd_state, ignore_errors=True)
        shutil.rmtree(self.paths.cni_data_dir, ignore_errors=True)
        shutil.rmtree(self.paths.kubelet_dir, ignore_errors=True)
        if not host.owns_machine(self.plane.config.state_dir):
            # Another node (or none) holds the namespace, cgroups and sysctls:
            # this cluster's own processes and files are all there is to undo.
            self._state_file.unlink(missing_ok=True)
            return
        host.kill_pod_processes()
        host.unmount_under(self.paths.root)
        host.remove_kubepods_cgroups()
        host.remove_container_log_links(self.paths.pod_logs)
        netns.delete(progress)
        host.restore_sysctls(self._state_file, progress)
        host.release_machine()

    def runtime_running(self) -> bool:
        """True if the node's containerd runs (images can be loaded)."""
        return self._containerd.running()

    def present(self) -> bool:
        """True if `up` ran here and `down` has not finished since."""
        return self._state_file.is_file() or any(c.pid_file.is_file() for c in self.components)

    def status(self) -> list[ComponentStatus]:
        return [component_status(c) for c in self.components]

    def import_image(self, archive: Path) -> None:
        """Load an image archive into the node's containerd (namespace k8s.io)."""
        self._containerd.import_image(archive)

    def _all_running(self) -> bool:
        return all(processes.read_pid(c) is not None for c in self.components)


@contextlib.contextmanager
def ephemeral_node_cluster(
    *, progress: Progress, state_dir: Path
) -> Iterator[tuple[ControlPlane, DevNode]]:
    """A control plane on free loopback ports with a node, for a `with` block (tests).

    Another run's node on the machine is waited for (`host.ephemeral_turn`).
    """
    with (
        host.ephemeral_turn(progress, wait=EPHEMERAL_WAIT),
        ephemeral_control_plane(
            progress=progress, state_dir=state_dir, node_address=HOST_ADDRESS
        ) as plane,
    ):
        node = DevNode(plane)
        try:
            node.up(progress=progress)
            yield plane, node
        finally:
            node.down(progress=lambda _: None)
