"""The Helm chart installed for real on the dev node, with the locally built images.

`helm install` of deploy/chart/wukong: two operator replicas become Ready and
one holds the leader Lease; a Wukong is reconciled to Running by the operator in
its pod (the simulator plays KubeVirt and CDI from outside the cluster); a
rolling restart hands leadership to a pod of the new ReplicaSet; `helm
uninstall` removes the release and keeps the CRD, as Helm does.

Certificates: `helm test` passes; an upgrade that keeps the webhook's Secret
rolls nothing, one that makes a new certificate rolls the pods with the new
caBundle; a rotation in place (the Secret's files replaced and the CA injected,
as cert-manager does) is served by the running pod without a restart.
"""

import base64
import json
import ssl
import subprocess
import uuid
from pathlib import Path
from typing import Any

from cryptography import x509

from tests.certificates import issue
from tests.integration.helpers import running
from tests.node.conftest import MetricsReader, NodeCluster, create_wukong
from tests.polling import eventually
from wukong.devcluster.apis import install_dev_apis
from wukong.devcluster.simulator import SimulationConfig, simulator_manager
from wukong.operator.api import WUKONGS
from wukong.runtime import Client
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


def _annotations(cluster: NodeCluster, namespace: str, deployment: str) -> dict[str, str]:
    got = json.loads(
        cluster.kubectl("get", "deployment", deployment, "-n", namespace, "-o", "json")
    )
    annotations: dict[str, str] = got["spec"]["template"]["metadata"]["annotations"]
    return annotations


def _ca_bundle(cluster: NodeCluster, name: str) -> str:
    got = json.loads(cluster.kubectl("get", "validatingwebhookconfiguration", name, "-o", "json"))
    (webhook,) = got["webhooks"]
    return str(webhook["clientConfig"]["caBundle"])


def _dry_run_wukong(cluster: NodeCluster, namespace: str, spec: dict[str, Any]) -> str:
    """A Wukong created as a server-side dry run (admission runs, nothing is stored):
    kubectl's output, its error included."""
    wukong = {
        "apiVersion": WUKONGS.api_version,
        "kind": "Wukong",
        "metadata": {"name": "probe", "namespace": namespace},
        "spec": spec,
    }
    return cluster.kubectl(
        "create", "--dry-run=server", "-f", "-", stdin=json.dumps(wukong), check=False
    )


def _helm_test(helm: Path, cluster: NodeCluster, release: str, namespace: str) -> str:
    result = subprocess.run(
        [str(helm), f"--kubeconfig={cluster.plane.kubeconfig}", "test", release, "-n", namespace],
        capture_output=True,
        text=True,
        timeout=300,
    )
    # A failed test pod is kept (hook-succeeded only): its log says what failed.
    logs = cluster.kubectl("logs", f"{release}-helm-test", "-n", namespace, check=False)
    assert result.returncode == 0, f"helm test: {result.stdout}{result.stderr}\n{logs}"
    return result.stdout


async def test_helm_test_passes_and_a_new_certificate_rolls_the_operator(
    node_cluster: NodeCluster, chart_values: Path, helm: Path
) -> None:
    # Its own release name, so its cluster-scoped objects (ClusterRoles, the webhook
    # configuration) are its own.
    release, release_ns = "wukong-certs", f"wukong-certs-{uuid.uuid4().hex[:6]}"
    selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator"
    args = [
        str(CHART),
        "-n",
        release_ns,
        "-f",
        str(chart_values),
        # Fail: a webhook the API server cannot trust rejects every write, so an
        # admitted Wukong proves the caBundle matches the certificate served.
        "--set",
        "webhook.failurePolicy=Fail",
        "--set",
        "operator.replicas=1",
        "--wait",
        "--timeout=180s",
    ]
    async with await Client.from_kubeconfig(node_cluster.plane.kubeconfig) as client:
        await install_dev_apis(client)
        _helm(helm, node_cluster, "install", release, *args, "--create-namespace")
        try:
            tested = _helm_test(helm, node_cluster, release, release_ns)
            assert "Phase:          Succeeded" in tested, tested
            # Deleted once passed: nothing of the test stays in the release.
            left = node_cluster.kubectl(
                "get", "pod,serviceaccount,role,rolebinding", "-n", release_ns, "-o", "name"
            )
            assert "helm-test" not in left, left

            before = _annotations(node_cluster, release_ns, release)["checksum/webhook-cert"]
            ca_before = _ca_bundle(node_cluster, release)
            pods_before = {p["metadata"]["name"] for p in _pods(node_cluster, release_ns, selector)}

            # An upgrade finds the Secret (lookup): same certificate, nothing rolls.
            _helm(helm, node_cluster, "upgrade", release, *args)
            assert (
                _annotations(node_cluster, release_ns, release)["checksum/webhook-cert"] == before
            )
            assert _ca_bundle(node_cluster, release) == ca_before
            assert {p["metadata"]["name"] for p in _pods(node_cluster, release_ns, selector)} == (
                pods_before
            )

            # Without it the chart makes a new CA and certificate: the pods roll onto
            # them as the configuration gets the new caBundle.
            node_cluster.kubectl("delete", "secret", f"{release}-webhook-cert", "-n", release_ns)
            _helm(helm, node_cluster, "upgrade", release, *args)
            node_cluster.kubectl(
                "rollout", "status", "-n", release_ns, f"deployment/{release}", "--timeout=180s"
            )
            after = _annotations(node_cluster, release_ns, release)["checksum/webhook-cert"]
            ca_after = _ca_bundle(node_cluster, release)
            assert after != before and ca_after != ca_before
            secret = json.loads(
                node_cluster.kubectl(
                    "get", "secret", f"{release}-webhook-cert", "-n", release_ns, "-o", "json"
                )
            )
            assert secret["data"]["ca.crt"] == ca_after

            def rolled() -> bool:
                pods = _pods(node_cluster, release_ns, selector)
                names = {p["metadata"]["name"] for p in pods}
                return bool(names) and not names & pods_before and all(_ready(p) for p in pods)

            await eventually(rolled, timeout=120, what="the operator pods to be replaced")

            # The new pod serves the new certificate: a Wukong is admitted, a bad one denied.
            admitted = _dry_run_wukong(node_cluster, release_ns, {})
            assert "created (server dry run)" in admitted, admitted
            denied = _dry_run_wukong(
                node_cluster,
                release_ns,
                {"disks": [{"name": "root", "size": "1Gi", "storageClassName": "missing"}]},
            )
            assert "denied the request" in denied and "storageClassName" in denied, denied
            tested = _helm_test(helm, node_cluster, release, release_ns)
            assert "Phase:          Succeeded" in tested, tested

            await _rotated_in_place(node_cluster, release, release_ns, selector)
        finally:
            _helm(helm, node_cluster, "uninstall", release, "-n", release_ns, "--wait")


async def _rotated_in_place(
    cluster: NodeCluster, release: str, namespace: str, selector: str
) -> None:
    """cert-manager's way: the Secret's files are replaced and the CA injected into the
    webhook configuration, no pod is touched. The kubelet updates the mounted files,
    the operator serves the new certificate without a restart, and the API server,
    trusting only the new CA (failurePolicy Fail), still admits through it."""
    (pod,) = _pods(cluster, namespace, selector)
    service = f"{release}-webhook"
    ca_pem, cert_pem, key_pem = _certificate_for(f"{service}.{namespace}.svc")
    encoded = {
        key: base64.b64encode(value).decode()
        for key, value in (("ca.crt", ca_pem), ("tls.crt", cert_pem), ("tls.key", key_pem))
    }
    secret_patch = json.dumps({"data": encoded})
    cluster.kubectl(
        "patch", "secret", f"{release}-webhook-cert", "-n", namespace, "-p", secret_patch
    )
    ca_patch = [
        {"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": encoded["ca.crt"]}
    ]
    cluster.kubectl(
        "patch",
        "validatingwebhookconfiguration",
        release,
        "--type=json",
        "-p",
        json.dumps(ca_patch),
    )
    service_ip = json.loads(
        cluster.kubectl("get", "service", service, "-n", namespace, "-o", "json")
    )["spec"]["clusterIP"]
    wanted = x509.load_pem_x509_certificate(cert_pem).serial_number

    def served() -> bool:
        # The host reaches Services through the node, as the API server does.
        try:
            pem = ssl.get_server_certificate((service_ip, 443), timeout=5)
        except OSError:
            return False
        return x509.load_pem_x509_certificate(pem.encode()).serial_number == wanted

    await eventually(served, timeout=150, interval=2, what="the operator to serve the new pair")
    admitted = _dry_run_wukong(cluster, namespace, {})
    assert "created (server dry run)" in admitted, admitted
    (after,) = _pods(cluster, namespace, selector)
    assert after["metadata"]["uid"] == pod["metadata"]["uid"]
    assert [c["restartCount"] for c in after["status"]["containerStatuses"]] == [0]


def _certificate_for(dns_name: str) -> tuple[bytes, bytes, bytes]:
    """A new CA and a serving certificate for `dns_name` it signed: CA, certificate, key."""
    ca = issue("rotated-ca", ca=True)
    serving = issue(dns_name, signed_by=ca, dns_names=(dns_name,))
    return ca.cert_pem, serving.cert_pem, serving.key_pem
