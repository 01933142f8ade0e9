"""Which pod and container a process belongs to: cgroup path -> pod UID -> pod.

The kubelet names cgroups after the pod UID (`kubepods-...-pod<uid>.slice` with
systemd, `.../pod<uid>/...` with cgroupfs) and the container runtime after the
container ID (`cri-containerd-<id>.scope`, `crio-<id>`, `docker-<id>`). Pods are
looked up on the API server, only those on this node, and cached by UID.
"""

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from wukong.runtime import Client, Object
from wukong.runtime.resources import Resource

log = logging.getLogger(__name__)

PODS = Resource(group="", version="v1", plural="pods", kind="Pod")
_POD_UID = re.compile(
    r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})"
)
_CONTAINER_ID = re.compile(r"(?:cri-containerd-|crio-|docker-|containerd-)?([0-9a-f]{64})")
# The node's pods are listed again at most this often (a pod that is new to the
# agent is usually new to the API server too: listing at once would find it).
_REFRESH_SECONDS = 1.0


@dataclass(frozen=True)
class Owner:
    namespace: str = ""
    pod: str = ""
    container: str = ""
    # Known from the cgroup while the pod was not found: `resolve` tries again.
    pod_uid: str = field(default="", compare=False)
    container_id: str = field(default="", compare=False)

    @property
    def unresolved(self) -> bool:
        return bool(self.pod_uid) and not self.namespace


def cgroup_ids(pid: int) -> tuple[str | None, str | None]:
    """(pod UID, container ID) from the process's cgroup path, when it has them."""
    text = Path(f"/proc/{pid}/cgroup").read_text()
    uid = _POD_UID.search(text)
    container = None
    for part in reversed(text.strip().split("/")):
        match = _CONTAINER_ID.fullmatch(part.removesuffix(".scope"))
        if match:
            container = match.group(1)
            break
    return (uid.group(1).replace("_", "-") if uid else None), container


class PodAttribution:
    """Maps pids to pods on `node`, asking the API server as new pod UIDs appear."""

    def __init__(self, *, node: str, kubeconfig: Path | None = None) -> None:
        self.node = node
        self._kubeconfig = kubeconfig
        self._pods: dict[str, Object] = {}
        self._last_refresh = 0.0

    def owner(self, pid: int) -> Owner:
        try:
            uid, container_id = cgroup_ids(pid)
        except OSError as exc:  # the process exited: nothing left to attribute
            log.debug("pid %d: cannot read its cgroup (%s); left unattributed", pid, exc)
            return Owner()
        if uid is None:
            return Owner()  # not in a pod: a process on the node itself
        return self._owner_of(uid, container_id or "")

    def resolve(self, owner: Owner) -> Owner:
        """An owner whose pod was not found when its process was taken on (the pod was
        newer than the agent's last listing), looked up again; the process may be gone."""
        if not owner.unresolved:
            return owner
        return self._owner_of(owner.pod_uid, owner.container_id)

    def _owner_of(self, uid: str, container_id: str) -> Owner:
        pod = self._pods.get(uid)
        # A pod not seen yet, or a container it did not have when last listed (a
        # restart, in a crash loop every few seconds): list the node's pods again.
        if pod is None or (container_id and _container_name(pod, container_id) is None):
            if time.monotonic() - self._last_refresh > _REFRESH_SECONDS:
                self._refresh()
                pod = self._pods.get(uid)
        if pod is None:
            return Owner(pod=f"uid:{uid}", pod_uid=uid, container_id=container_id)
        metadata = pod["metadata"]
        container = _container_name(pod, container_id) if container_id else None
        return Owner(
            namespace=metadata["namespace"], pod=metadata["name"], container=container or ""
        )

    def _refresh(self) -> None:
        self._last_refresh = time.monotonic()
        try:
            pods = asyncio.run(self._list_pods())
        except Exception as exc:  # the API server is optional: attribution degrades to uid:...
            log.warning(
                "cannot list the pods on node %s (%s); cancellations are attributed by pod "
                "UID until it answers",
                self.node,
                exc,
            )
            return
        self._pods = {pod["metadata"]["uid"]: pod for pod in pods}

    async def _list_pods(self) -> list[Object]:
        async with await Client.configured(self._kubeconfig) as client:
            listed = await client.list(
                PODS, field_selector=f"spec.nodeName={self.node}", timeout=10
            )
        return list(listed["items"])


def _container_name(pod: Object, container_id: str) -> str | None:
    """The name of the pod's container (init containers included) with this ID. A
    container started a moment ago is not in the pod's status yet (the kubelet
    reports it after): in a pod of one container, it can only be that one."""
    status = pod.get("status") or {}
    for key in ("containerStatuses", "initContainerStatuses"):
        for container in status.get(key) or []:
            if str(container.get("containerID", "")).endswith(container_id):
                return str(container["name"])
    spec = pod.get("spec") or {}
    containers = spec.get("containers") or []
    if len(containers) == 1 and not spec.get("initContainers"):
        return str(containers[0]["name"])
    return None
