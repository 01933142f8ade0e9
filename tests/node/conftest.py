"""The dev node for tests: one control plane with a real node for the session.

`node_cluster` starts etcd, kube-apiserver and the node (containerd, kubelet,
kube-proxy, kube-scheduler, kube-controller-manager in network namespace
wukong-node) on free loopback ports, and takes it all down at the end, which
restores what the node changed on the host. `probe_image` builds a tiny static
Go program (tests/node/programs/probe) into an image and loads it on the node.
`metrics_reader` is a ServiceAccount to list in the chart's `metrics.readers`,
with a token to GET the pods' secure /metrics from inside the node's network
namespace (and the token of another ServiceAccount, which the chart does not grant).
`node_prometheus` runs Prometheus in the node's namespace, scraping the pods
annotated for it, with the chart's alert rules loaded.
"""

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import build_progress
from wukong.devcluster import ControlPlane, binaries, images
from wukong.devcluster.imagebuild import BuiltImage
from wukong.devcluster.node import IN_NETNS, DevNode, ephemeral_node_cluster
from wukong.devcluster.node_prometheus import node_prometheus as start_node_prometheus
from wukong.devcluster.prometheus import LocalPrometheus
from wukong.operator.api import WUKONGS
from wukong.runtime import Client

PROBE_IMAGE = "wukong.local/probe:test"
PROGRAMS = Path(__file__).parent / "programs"
CHART = Path(__file__).resolve().parents[2] / "deploy" / "chart" / "wukong"


# The node's programs, Prometheus 3, helm and the images are built here on first use.
_progress = build_progress.progress


# Checks that run kubectl or read Prometheus are asked about twice a second.
KUBECTL_POLL = 0.5


@dataclass(frozen=True)
class NodeCluster:
    plane: ControlPlane
    node: DevNode
    kubectl_path: Path

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [str(self.kubectl_path), f"--kubeconfig={self.plane.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check:
            assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result.stdout + (result.stderr if not check else "")


@pytest.fixture(scope="session")
def node_cluster(tmp_path_factory: pytest.TempPathFactory, kubectl: Path) -> Iterator[NodeCluster]:
    state_dir = tmp_path_factory.mktemp("node-cluster")  # kept: logs for failures
    with ephemeral_node_cluster(progress=_progress, state_dir=state_dir) as (plane, node):
        yield NodeCluster(plane, node, kubectl)


@pytest.fixture(scope="session")
def probe_image(node_cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    binary = binaries.go_program(
        PROGRAMS / "probe",
        name="node-probe",
        progress=_progress,
        build_flags=["-tags=netgo,osusergo", "-ldflags=-s -w"],
    )
    spec = images.ImageSpec(
        tag=PROBE_IMAGE,
        files=[images.ImageFile(path="/probe", source=binary)],
        entrypoint=["/probe"],
        user="65534:65534",
    )
    archive = tmp_path_factory.mktemp("images") / "probe.tar"
    images.write_archive(spec, archive)
    node_cluster.node.import_image(archive)
    return PROBE_IMAGE


@pytest.fixture(scope="session")
def built_images(node_cluster: NodeCluster) -> tuple[BuiltImage, BuiltImage]:
    """The operator and agent images built from deploy/images, loaded on the node."""
    from wukong.devcluster import imagebuild

    operator = imagebuild.build_operator_image(progress=_progress)
    agent = imagebuild.build_agent_image(progress=_progress)
    for built in (operator, agent):
        node_cluster.node.import_image(built.archive)
    return operator, agent


@pytest.fixture(scope="session")
def chart_values(node_cluster: NodeCluster, built_images: tuple[BuiltImage, BuiltImage]) -> Path:
    """The Helm values file that points the chart at the local images (`wukong dev images`)."""
    from wukong.devcluster import imagebuild

    operator, agent = built_images
    return imagebuild.values_file(
        operator, agent, node_cluster.node.paths.root / "images-values.yaml"
    )


@pytest.fixture(scope="session")
def helm() -> Path:
    return binaries.helm_binary(progress=_progress)


@pytest.fixture
def node_namespace(node_cluster: NodeCluster) -> Iterator[str]:
    name = f"node-{uuid.uuid4().hex[:8]}"
    node_cluster.kubectl("create", "namespace", name)
    yield name
    node_cluster.kubectl("delete", "namespace", name, "--wait=false")


# GET argv[1] with bearer argv[2] (none when empty), not verifying the pod's
# self-signed certificate (as kubebuilder's ServiceMonitor does); print the
# status on the first line (0: no HTTP answer), then the body.
_GET = """
import ssl, sys, urllib.error, urllib.request
request = urllib.request.Request(sys.argv[1])
if sys.argv[2]:
    request.add_header("Authorization", "Bearer " + sys.argv[2])
try:
    response = urllib.request.urlopen(request, timeout=5, context=ssl._create_unverified_context())
    status, body = response.status, response.read().decode()
except urllib.error.HTTPError as error:
    status, body = error.code, error.read().decode()
except OSError as error:  # nothing listens (yet), or no TLS there
    status, body = 0, str(error)
sys.stdout.write(f"{status}\\n{body}")
"""


def metrics_url(pod: dict[str, Any], port: int) -> str:
    return f"https://{pod['status']['podIP']}:{port}/metrics"


def get_in_node(url: str, *, token: str | None) -> tuple[int, str]:
    """GET a pod's URL from inside the node's network namespace: (status, body); status 0
    when no HTTP answer came."""
    result = subprocess.run(
        [*IN_NETNS, sys.executable, "-c", _GET, url, token or ""],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    status, _, body = result.stdout.partition("\n")
    return int(status), body


def metrics_readers_args(*readers: tuple[str, str]) -> list[str]:
    """`helm install` arguments that put these (namespace, name) accounts in metrics.readers."""
    listed = [{"namespace": namespace, "name": name} for namespace, name in readers]
    return ["--set-json", f"metrics.readers={json.dumps(listed)}"]


async def create_wukong(client: Client, namespace: str, name: str = "vm") -> None:
    """A Wukong with an empty spec, for the chart's operator to reconcile."""
    await client.create(
        WUKONGS,
        {
            "apiVersion": WUKONGS.api_version,
            "kind": "Wukong",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {},
        },
    )


@dataclass(frozen=True)
class MetricsReader:
    namespace: str
    name: str
    token: str
    unauthorised_token: str  # of another ServiceAccount, which no chart value grants

    def helm_args(self) -> list[str]:
        """`helm install` arguments that put this account in metrics.readers."""
        return metrics_readers_args((self.namespace, self.name))

    def get(self, pod: dict[str, Any], port: int) -> str:
        """The pod's /metrics over HTTPS, read with this account's token."""
        status, body = get_in_node(metrics_url(pod, port), token=self.token)
        assert status == 200, (status, body)
        return body


@pytest.fixture(scope="session")
def metrics_reader(node_cluster: NodeCluster) -> MetricsReader:
    namespace = "metrics-readers"
    objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}]
    for name in ("scraper", "intruder"):
        metadata = {"name": name, "namespace": namespace}
        objects.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata})
    listing = {"apiVersion": "v1", "kind": "List", "items": objects}
    node_cluster.kubectl("apply", "-f", "-", stdin=json.dumps(listing))

    def token(name: str) -> str:
        made = node_cluster.kubectl("create", "token", name, "-n", namespace, "--duration=2h")
        return made.strip()

    return MetricsReader(namespace, "scraper", token("scraper"), token("intruder"))


@pytest.fixture
def node_prometheus(session_node_prometheus: LocalPrometheus) -> LocalPrometheus:
    """The session's Prometheus in the node's namespace, answering: started again if a
    test before took the node (and so its namespace) down and up."""
    session_node_prometheus.start_again_if_gone()
    return session_node_prometheus


@pytest.fixture(scope="session")
def session_node_prometheus(
    node_cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalPrometheus]:
    """Prometheus in the node's namespace scraping annotated pods, with the chart's rules."""
    # The groups a PrometheusRule made by the chart carries (files/prometheus-rules.yaml).
    groups = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    rules = tmp_path_factory.mktemp("rules") / "wukong.rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups}))
    prometheus = start_node_prometheus(node_cluster.node, progress=_progress, rule_files=[rules])
    prometheus.start()
    # Stopped before the node goes: a process left in the namespace would keep its link.
    yield prometheus
    prometheus.stop()
