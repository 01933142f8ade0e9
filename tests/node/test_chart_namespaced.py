"""The chart in namespaced mode (`operator.watchNamespace`) on the dev node.

The operator's pods run with only the chart's namespaced RBAC: its rules bound
in the watched namespace, StorageClasses read-only, and that Namespace by
name. They start (their start-up check of every permission passes, with no
warning), become Ready, and reconcile a Wukong in that namespace to Running;
the API server refuses the same identity anywhere else.
"""

import json
import uuid
from pathlib import Path

from tests.integration.helpers import running
from tests.node.conftest import NodeCluster, create_wukong
from tests.node.test_chart_on_node import CHART, _helm, _pods, _ready
from tests.polling import eventually
from wukong.devcluster.apis import install_dev_apis
from wukong.devcluster.simulator import SimulationConfig, simulator_manager
from wukong.operator.api import WUKONGS
from wukong.runtime import Client
from wukong.runtime.resources import NAMESPACES

RELEASE = "wukong-ns"  # its own cluster-scoped names, next to any other release


async def test_the_chart_in_namespaced_mode_reconciles_in_its_namespace(
    node_cluster: NodeCluster, chart_values: Path, helm: Path
) -> None:
    release_ns = f"wukong-{uuid.uuid4().hex[:6]}"
    watched = f"vms-{uuid.uuid4().hex[:6]}"
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"
    async with await Client.from_kubeconfig(node_cluster.plane.kubeconfig) as client:
        await install_dev_apis(client)
        await client.create(
            NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": watched}}
        )
        try:
            _helm(
                helm,
                node_cluster,
                "install",
                RELEASE,
                str(CHART),
                "-n",
                release_ns,
                "--create-namespace",
                "-f",
                str(chart_values),
                f"--set=operator.watchNamespace={watched}",
                "--wait",
                "--timeout=180s",
            )
            pods = _pods(node_cluster, release_ns, selector)
            assert pods and all(_ready(p) for p in pods)

            account = f"--as=system:serviceaccount:{release_ns}:{RELEASE}"
            for expected, args in [
                ("yes", ("watch", "wukongs.vm.novasphere.dev", "-n", watched)),
                ("no", ("watch", "wukongs.vm.novasphere.dev", "-A")),
                ("no", ("list", "virtualmachines.kubevirt.io", "-n", "default")),
                ("yes", ("watch", "storageclasses.storage.k8s.io")),
                ("yes", ("watch", f"namespaces/{watched}")),
                ("no", ("list", "namespaces")),
            ]:
                answer = node_cluster.kubectl("auth", "can-i", account, *args, check=False)
                assert answer.splitlines()[0].strip() == expected, (args, answer)

            simulator = simulator_manager(client=client, config=SimulationConfig())
            async with running(simulator):
                await create_wukong(client, watched)

                async def vm_running() -> bool:
                    vm = await client.get(WUKONGS, "vm", namespace=watched)
                    return bool((vm.get("status") or {}).get("phase") == "Running")

                await eventually(vm_running, timeout=120, what="the Wukong to be Running")

            for pod in pods:
                logs = node_cluster.kubectl(
                    "logs", "-n", release_ns, pod["metadata"]["name"], "-c", "operator"
                )
                records = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
                # No degraded feature (a refused read is a WARNING naming it), no error.
                bad = [
                    r["message"]
                    for r in records
                    if r["level"] == "ERROR"
                    or (
                        r["level"] == "WARNING"
                        and ("may not" in r["message"] or "cannot" in r["message"])
                    )
                ]
                assert not bad, bad
                assert any(f"starting: {watched}" in r["message"] for r in records), logs[-2000:]
        finally:
            _helm(helm, node_cluster, "uninstall", RELEASE, "-n", release_ns, "--wait")
