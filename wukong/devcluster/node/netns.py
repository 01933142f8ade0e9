"""The node's network namespace and the one veth pair that joins it to the host.

    host: wk-host 10.201.0.1/30  <->  wukong-node: wk-node 10.201.0.2/30 (node IP)

The namespace has no default route: nothing in it can send traffic beyond it
but to the forwarder on 10.201.0.1. Deleting the namespace removes the bridge,
the pods' interfaces and every iptables rule made inside it; deleting the host's
link removes the host's route to the Service IPs with it.
"""

import subprocess
from pathlib import Path

from wukong.devcluster.binaries import Progress
from wukong.devcluster.node.layout import (
    HOST_ADDRESS,
    HOST_IFACE,
    IN_NETNS,
    LINK_PREFIX,
    NETNS,
    NODE_ADDRESS,
    NODE_IFACE,
    POD_CIDR,
    run,
)
from wukong.devcluster.pki import SERVICE_CLUSTER_IP_RANGE


def exists() -> bool:
    return Path("/run/netns", NETNS).exists()


def host_link_exists() -> bool:
    return Path("/sys/class/net", HOST_IFACE).exists()


def _setup_commands() -> list[list[str]]:
    services = SERVICE_CLUSTER_IP_RANGE
    # Every name and address here is one word, so each command splits on spaces.
    commands = [
        f"ip netns add {NETNS}",
        f"ip link add {HOST_IFACE} type veth peer name {NODE_IFACE} netns {NETNS}",
        f"ip addr add {HOST_ADDRESS}/{LINK_PREFIX} dev {HOST_IFACE}",
        f"ip link set {HOST_IFACE} up",
        f"ip -n {NETNS} addr add {NODE_ADDRESS}/{LINK_PREFIX} dev {NODE_IFACE}",
        f"ip -n {NETNS} link set {NODE_IFACE} up",
        f"ip -n {NETNS} link set lo up",
        # The API server calls webhooks at their Service's ClusterIP, as a real
        # control plane does: Service IPs are routed into the node, where
        # kube-proxy sends them on to the pods (the route goes with the veth).
        f"ip route add {services} via {NODE_ADDRESS} dev {HOST_IFACE}",
        # Processes on the node itself (the kubelet's probes, host-network
        # pods) reach Service IPs: kube-proxy rewrites them in OUTPUT, but only
        # after a route was found.
        f"ip -n {NETNS} route add {services} via {HOST_ADDRESS}",
    ]
    in_netns = [
        # Pods reach the host end (the API server forwarder) as the node: the
        # host has no route to the pod network and must not get one.
        f"iptables -t nat -A POSTROUTING -s {POD_CIDR} -o {NODE_IFACE} -j MASQUERADE",
        # Nothing leaves the namespace but for the forwarder's address: an
        # unallocated Service IP is refused here instead of reaching the host.
        f"iptables -A OUTPUT -o {NODE_IFACE} ! -d {HOST_ADDRESS} -j REJECT",
        f"iptables -A FORWARD -o {NODE_IFACE} ! -d {HOST_ADDRESS} -j REJECT",
    ]
    return [c.split() for c in commands] + [[*IN_NETNS, *c.split()] for c in in_netns]


def create(progress: Progress) -> None:
    """A fresh namespace (an old one of this node deleted first), linked and fenced."""
    if exists():
        subprocess.run(["ip", "netns", "delete", NETNS], check=False, capture_output=True)
    progress(
        f"creating network namespace {NETNS}: {HOST_IFACE} {HOST_ADDRESS} <-> "
        f"{NODE_IFACE} {NODE_ADDRESS}"
    )
    for argv in _setup_commands():
        run(argv)


def delete(progress: Progress) -> None:
    """Delete the namespace (with all inside it) and the host's end of the link."""
    if exists():
        subprocess.run(["ip", "netns", "delete", NETNS], check=False, capture_output=True)
        progress(f"deleted network namespace {NETNS} (its interfaces and iptables rules)")
    if host_link_exists():
        subprocess.run(["ip", "link", "delete", HOST_IFACE], check=False, capture_output=True)
