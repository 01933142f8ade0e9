"""A real node for the local control plane: containerd, kubelet, kube-proxy, and the
controllers and scheduler that make Deployments and DaemonSets run on it.

Everything networked lives in one network namespace, `wukong-node`, so the host's
own network is never touched: containerd (and so the CNI bridge and every pod),
the kubelet, kube-proxy, kube-scheduler and kube-controller-manager run inside it
(`nsenter --net`, which keeps the host's mount namespace: the kubelet's volume
mounts must be seen by containerd). A veth pair links it to the host:

    host: wk-host 10.201.0.1/30  <->  wukong-node: wk-node 10.201.0.2/30 (node IP)
          pods 10.244.0.0/24 on bridge cni0, Services 10.96.0.0/24 (kube-proxy, iptables)

The API server stays on the host's 127.0.0.1; a forwarder listens on 10.201.0.1
at the API server's port and is the `kubernetes` Service's endpoint. The API
server reaches the kubelet at 10.201.0.2 for `kubectl logs/exec`, and Services
(webhooks) through the host's route for the Service range via 10.201.0.2.

One module per component, each owning its process, configuration and readiness:
`netns` (the namespace, the veth pair, the routes and the fence), `containerd`
(the runtime and the pods' CNI bridge), `kubelet`, `components` (the forwarder,
kube-controller-manager, kube-scheduler, kube-proxy), `host` (the machine-wide
changes and their undoing: sysctls, mounts, cgroups, the owner file); `layout`
holds the names, addresses and paths they share and `devnode` composes them.
`down` undoes every host change `up` made; container images stay in
containerd's root under the state directory, so the next `up` finds them.
"""

from wukong.devcluster.node.devnode import DevNode, ephemeral_node_cluster
from wukong.devcluster.node.host import KERNEL_TUNABLES, OWNER_FILE
from wukong.devcluster.node.layout import (
    HOST_ADDRESS,
    HOST_IFACE,
    IN_NETNS,
    NETNS,
    NODE_ADDRESS,
    NODE_IFACE,
    NODE_NAME,
    POD_CIDR,
    NodePaths,
)

__all__ = [
    "HOST_ADDRESS",
    "HOST_IFACE",
    "IN_NETNS",
    "KERNEL_TUNABLES",
    "NETNS",
    "NODE_ADDRESS",
    "NODE_IFACE",
    "NODE_NAME",
    "OWNER_FILE",
    "POD_CIDR",
    "DevNode",
    "NodePaths",
    "ephemeral_node_cluster",
]
