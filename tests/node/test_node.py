"""The dev node runs real pods: scheduled, networked, reachable with kubectl.

Each test checks something a broken node would get wrong: the node's address
and runtime, a pod's own ServiceAccount identity as the API server saw it
through the `kubernetes` Service, `kubectl logs` and `exec` through the kubelet,
Deployments scaled by the controller-manager, and namespaces that really go away.
"""

import json

import yaml

from tests.node.conftest import KUBECTL_POLL, NodeCluster
from tests.polling import wait_until
from wukong.devcluster import images
from wukong.devcluster.node import NODE_ADDRESS, NODE_NAME


def test_the_node_registers_ready_with_its_address_and_runtime(node_cluster: NodeCluster) -> None:
    node = json.loads(node_cluster.kubectl("get", "node", NODE_NAME, "-o", "json"))
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == NODE_ADDRESS
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://1.6")
    assert node["status"]["nodeInfo"]["kubeletVersion"] == node_cluster.plane.status().version
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready[0]["status"] == "True"


def _probe_pod(namespace: str, image: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "probe", "namespace": namespace},
            "spec": {
                "containers": [{"name": "probe", "image": image, "imagePullPolicy": "Never"}],
                "terminationGracePeriodSeconds": 1,
            },
        }
    )


def test_a_pod_reaches_the_api_server_through_the_kubernetes_service_as_its_account(
    node_cluster: NodeCluster, probe_image: str, node_namespace: str
) -> None:
    node_cluster.kubectl("apply", "-f", "-", stdin=_probe_pod(node_namespace, probe_image))
    node_cluster.kubectl(
        "wait", "-n", node_namespace, "--for=condition=Ready", "pod/probe", "--timeout=90s"
    )
    expected = f"user: system:serviceaccount:{node_namespace}:default"

    def logged() -> bool:
        return expected in node_cluster.kubectl("logs", "-n", node_namespace, "probe")

    # `kubectl logs` goes API server -> kubelet at the node's address.
    wait_until(logged, timeout=30, interval=KUBECTL_POLL, what="the probe's answer in its log")
    # `kubectl exec` streams through the kubelet and containerd.
    out = node_cluster.kubectl("exec", "-n", node_namespace, "probe", "--", "/probe", "once")
    assert out.strip() == expected


def test_deployments_are_scaled_and_deleted_namespaces_go_away(node_cluster: NodeCluster) -> None:
    namespace = "node-deploy"
    node_cluster.kubectl("create", "namespace", namespace)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "sleepers", "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "sleepers"}},
            "template": {
                "metadata": {"labels": {"app": "sleepers"}},
                "spec": {
                    "containers": [
                        {"name": "pause", "image": images.PAUSE_IMAGE, "imagePullPolicy": "Never"}
                    ],
                    "terminationGracePeriodSeconds": 1,
                },
            },
        },
    }
    node_cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(deployment))
    node_cluster.kubectl(
        "rollout", "status", "-n", namespace, "deployment/sleepers", "--timeout=90s"
    )
    pods = json.loads(node_cluster.kubectl("get", "pods", "-n", namespace, "-o", "json"))
    assert len(pods["items"]) == 2
    assert {p["spec"]["nodeName"] for p in pods["items"]} == {NODE_NAME}
    # ReplicaSet owned by the Deployment: garbage collection follows owner references.
    node_cluster.kubectl("delete", "namespace", namespace, "--wait=false")

    def gone() -> bool:
        found = node_cluster.kubectl("get", "namespace", namespace, "--ignore-not-found")
        return found.strip() == ""

    wait_until(
        gone, timeout=120, interval=KUBECTL_POLL, what=f"namespace {namespace} to be deleted"
    )
