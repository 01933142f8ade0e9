"""The Helm chart installed for real on the dev node, with the locally built images.

`helm install` of deploy/chart/wukong: two operator replicas become Ready and
one holds the leader Lease; a Wukong is reconciled to Running by the operator in
its pod (the simulator plays KubeVirt and CDI from outside the cluster); a
rolling restart hands leadership to a pod of the new ReplicaSet; `helm
uninstall` removes the release and keeps the CRD, as Helm does.
"""

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

from tests.integration.helpers import eventually, running
from tests.node.conftest import MetricsReader, NodeCluster, create_wukong
from wukong.devcluster.apis import install_dev_apis
from wukong.devcluster.simulator import SimulationConfig, simulator_manager
from wukong.operator.api import WUKONGS
from wukong.runtime._client import Client
from wukong.runtime.resources import LEASES, NAMESPACES

LEASE = "wukong-operator"
CHART = Path(__file__).resolve().parents[2] / "deploy" / "chart" / "wukong"


def _helm(helm: Path, cluster: NodeCluster, *args: str) -> str:
    result = subprocess.run(
        [str(helm), f"--kubeconfig={cluster.plane.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"helm {' '.join(args)}: {result.stderr}"
    return result.stdout


def _pods(cluster: NodeCluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    listing = cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json")
    items: list[dict[str, Any]] = json.loads(listing)["items"]
    return items


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


async def test_the_chart_runs_the_operator_which_reconciles_and_hands_over_leadership(
    node_cluster: NodeCluster, chart_values: Path, helm: Path, metrics_reader: MetricsReader
) -> None:
    release_ns = f"wukong-{uuid.uuid4().hex[:6]}"
    selector = "app.kubernetes.io/name=wukong,app.kubernetes.io/component=operator"
    async with await Client.from_kubeconfig(node_cluster.plane.kubeconfig) as client:
        await install_dev_apis(client)
        _helm(
            helm,
            node_cluster,
            "install",
            "wukong",
            str(CHART),
            "-n",
            release_ns,
            "--create-namespace",
            "-f",
            str(chart_values),
            *metrics_reader.helm_args(),
            "--wait",
            "--timeout=180s",
        )
        pods = _pods(node_cluster, release_ns, selector)
        assert len(pods) == 2 and all(_ready(p) for p in pods)

        # RBAC as the API server decides it for the operator's ServiceAccount.
        account = f"--as=system:serviceaccount:{release_ns}:wukong"
        for expected, args in [
            ("yes", ("patch", "wukongs.vm.novasphere.dev", "--subresource=status", "-A")),
            ("no", ("update", "wukongs.vm.novasphere.dev", "-A")),
            ("yes", ("create", "virtualmachines.kubevirt.io", "-n", "default")),
            ("yes", ("update", "leases.coordination.k8s.io", "-n", release_ns)),
            ("no", ("update", "leases.coordination.k8s.io", "-n", "default")),
            ("no", ("get", "secrets", "-n", release_ns)),
            ("no", ("list", "secrets", "-A")),
            ("no", ("delete", "namespaces")),
            ("no", ("create", "pods", "-n", release_ns)),
            # A secure /metrics asks the API server about its callers...
            ("yes", ("create", "tokenreviews.authentication.k8s.io")),
            ("yes", ("create", "subjectaccessreviews.authorization.k8s.io")),
            # ...and is read by metrics.readers only.
            ("no", ("get", "/metrics")),
        ]:
            answer = node_cluster.kubectl("auth", "can-i", account, *args, check=False)
            assert answer.splitlines()[0].strip() == expected, (args, answer)
        for expected, name in [("yes", metrics_reader.name), ("no", "intruder")]:
            reader = f"--as=system:serviceaccount:{metrics_reader.namespace}:{name}"
            answer = node_cluster.kubectl("auth", "can-i", reader, "get", "/metrics", check=False)
            assert answer.splitlines()[0].strip() == expected, (name, answer)
        names = {p["metadata"]["name"] for p in pods}

        async def holder() -> str:
            lease = await client.get(LEASES, LEASE, namespace=release_ns)
            return str(lease["spec"].get("holderIdentity") or "")

        async def led_by_one_of(pods: set[str]) -> bool:
            return (await holder()).rsplit("_", 1)[0] in pods

        await eventually(lambda: led_by_one_of(names), timeout=60, what="a leader among the pods")

        # A Wukong reconciled by the operator in its pod, infrastructure simulated.
        namespace = f"vms-{uuid.uuid4().hex[:6]}"
        await client.create(
            NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        )
        simulator = simulator_manager(client=client, config=SimulationConfig())
        async with running(simulator):
            await create_wukong(client, namespace)

            async def vm_running() -> bool:
                vm = await client.get(WUKONGS, "vm", namespace=namespace)
                return bool((vm.get("status") or {}).get("phase") == "Running")

            await eventually(vm_running, timeout=120, what="the Wukong to be Running")

        # A rolling restart: the old pods go, a new one takes the Lease.
        node_cluster.kubectl("rollout", "restart", "-n", release_ns, "deployment/wukong")
        node_cluster.kubectl(
            "rollout", "status", "-n", release_ns, "deployment/wukong", "--timeout=180s"
        )
        new = {p["metadata"]["name"] for p in _pods(node_cluster, release_ns, selector)} - names

        await eventually(lambda: led_by_one_of(new), timeout=90, what="a new pod to lead")

        _helm(helm, node_cluster, "uninstall", "wukong", "-n", release_ns, "--wait")

        def nothing_left() -> bool:
            left = node_cluster.kubectl(
                "get",
                "deployment,replicaset,pod,serviceaccount,role,rolebinding,service",
                "-n",
                release_ns,
                "-l",
                "app.kubernetes.io/instance=wukong",
                "-o",
                "name",
            )
            return left.strip() == ""

        # The pods go once the garbage collector has followed their owners.
        await eventually(nothing_left, timeout=120, what="the release's objects to be gone")
        crd = node_cluster.kubectl("get", "crd", "wukongs.vm.novasphere.dev", "-o", "name")
        assert (
            crd.strip() == "customresourcedefinition.apiextensions.k8s.io/wukongs.vm.novasphere.dev"
        )
