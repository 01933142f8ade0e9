"""The dev node's Prometheus: the node's pods, discovered and scraped the way a
Prometheus in a real cluster does it (pod annotations, no ServiceMonitor).

Who it is: ServiceAccount `prometheus` in namespace `wukong-monitoring`, bound
to a ClusterRole that may get, list and watch pods, with a token from the
TokenRequest API (`kubectl create token`) in a file. Prometheus sends that
token to the API server for discovery and to every pod it scrapes, so a pod
whose `/metrics` checks callers (TokenReview + SubjectAccessReview, the chart's
`metrics.readers`) lets it in once the chart names this ServiceAccount.
Prometheus reads the file on every request: rewriting it renews the token.

What it scrapes (`pod_scrape_configs`): `kubernetes_sd_configs` role `pod`,
keeping the pods annotated `prometheus.io/scrape: "true"`, at the pod's IP and
the container port named by `prometheus.io/port` (the port must be declared by
a container, which also gives the `container` label), with the scheme of
`prometheus.io/scheme` (http or https; a pod's serving certificate is not
checked, the token is what authenticates) and the path of `prometheus.io/path`.
Target labels: `namespace`, `pod`, `container`, and `job`, which is
- the pod's `prometheus.io/job` annotation if set (the chart sets it to its
  metrics Service's name: the `job` a ServiceMonitor would give, so dashboards
  and alerts see one `job` either way), else
- `<app.kubernetes.io/name>-<app.kubernetes.io/component>` (or the name alone),
  else `kubernetes-pods`.

Where it runs: inside the node's network namespace, where the pods' IPs are,
listening on the node's address (the host reaches it over the veth link) and
reaching the API server through the forwarder on the host end, so nothing
leaves loopback or the namespace and the host's routes stay as they were.

Two lifecycles: `node_prometheus` gives tests a `LocalPrometheus` (temporary
data, their own rules); `start`/`stop` run the one of `wukong dev up --node`
in the background like the node's other processes (pid file, log and data in
the state directory, the chart's alert rules loaded), stopped before the node
goes, since a process left in the namespace would keep its link alive.
"""

import subprocess
from pathlib import Path
from typing import Any

import yaml

from wukong.dashboards.alerts import render_alert_rules
from wukong.devcluster import binaries, processes
from wukong.devcluster.binaries import Progress
from wukong.devcluster.cluster import ComponentStatus, component_status
from wukong.devcluster.errors import DevClusterError
from wukong.devcluster.node import HOST_ADDRESS, IN_NETNS, NETNS, NODE_ADDRESS, DevNode
from wukong.devcluster.processes import Component
from wukong.devcluster.prometheus import LocalPrometheus, is_ready, server_argv, write_config

MONITORING_NAMESPACE = "wukong-monitoring"
SCRAPER = "prometheus"
PORT = 9090
URL = f"http://{NODE_ADDRESS}:{PORT}"
POD_JOB = "kubernetes-pods"
_ROLE = "wukong-dev-prometheus"
_TOKEN_DURATION = "24h"
_ANNOTATION = "__meta_kubernetes_pod_annotation_prometheus_io_"
_LABEL = "__meta_kubernetes_pod_label_app_kubernetes_io_"


def scraper_manifests() -> list[dict[str, Any]]:
    """The namespace, ServiceAccount and pod-reading ClusterRole (and binding) of the scraper."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": MONITORING_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SCRAPER, "namespace": MONITORING_NAMESPACE},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": _ROLE},
            # Pod discovery only; reading /metrics is granted by each chart (metrics.readers).
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": _ROLE},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": _ROLE,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": SCRAPER, "namespace": MONITORING_NAMESPACE}
            ],
        },
    ]


def grant_scraper(*, kubectl: Path, kubeconfig: Path, token_file: Path) -> None:
    """Create the scraper's identity (idempotent) and write a fresh token to `token_file`."""
    manifests = yaml.safe_dump_all(scraper_manifests())
    _kubectl(kubectl, kubeconfig, "apply", "-f", "-", stdin=manifests)
    token = _kubectl(
        kubectl,
        kubeconfig,
        "create",
        "token",
        SCRAPER,
        "-n",
        MONITORING_NAMESPACE,
        f"--duration={_TOKEN_DURATION}",
    ).strip()
    token_file.parent.mkdir(parents=True, exist_ok=True)
    staged = token_file.with_suffix(".tmp")
    staged.touch(mode=0o600)
    staged.write_text(token)
    staged.replace(token_file)  # Prometheus never reads half a token


def pod_scrape_configs(*, api_server: str, ca_file: Path, token_file: Path) -> list[dict[str, Any]]:
    """The scrape jobs for annotated pods (see the module doc for the rules): one for
    pods whose series describe themselves, one keeping the series' own namespace, pod
    and container labels for pods annotated `prometheus.io/honor-labels: "true"`
    (the node agent, whose series name the pods it traces)."""
    job = _pod_scrape_config(api_server=api_server, ca_file=ca_file, token_file=token_file)
    honoring = {"source_labels": [f"{_ANNOTATION}honor_labels"], "regex": "true"}
    return [
        {**job, "relabel_configs": [{**honoring, "action": "drop"}, *job["relabel_configs"]]},
        {
            **job,
            "job_name": f"{POD_JOB}-honor-labels",
            "honor_labels": True,
            "relabel_configs": [{**honoring, "action": "keep"}, *job["relabel_configs"]],
        },
    ]


def _pod_scrape_config(*, api_server: str, ca_file: Path, token_file: Path) -> dict[str, Any]:
    credentials = {"credentials_file": str(token_file)}
    return {
        "job_name": POD_JOB,
        "kubernetes_sd_configs": [
            {
                "role": "pod",
                "api_server": api_server,
                "authorization": credentials,
                "tls_config": {"ca_file": str(ca_file)},
            }
        ],
        "authorization": credentials,
        # Pods serve self-signed certificates (kubebuilder's default); the token,
        # not the certificate, is what authenticates the scrape.
        "tls_config": {"insecure_skip_verify": True},
        "relabel_configs": [
            {"source_labels": [f"{_ANNOTATION}scrape"], "regex": "true", "action": "keep"},
            {
                "source_labels": ["__meta_kubernetes_pod_phase"],
                "regex": "Pending|Succeeded|Failed",
                "action": "drop",
            },
            # Discovery yields one target per declared container port, at podIP:port:
            # keep the one the annotation names.
            {
                "source_labels": ["__meta_kubernetes_pod_container_port_number"],
                "target_label": f"{_ANNOTATION}port",
                "action": "keepequal",
            },
            {
                "source_labels": [f"{_ANNOTATION}scheme"],
                "regex": "(https?)",
                "target_label": "__scheme__",
            },
            {
                "source_labels": [f"{_ANNOTATION}path"],
                "regex": "(.+)",
                "target_label": "__metrics_path__",
            },
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {
                "source_labels": ["__meta_kubernetes_pod_container_name"],
                "target_label": "container",
            },
            # job: the first that applies of these, read bottom up.
            {"source_labels": [f"{_LABEL}name"], "regex": "(.+)", "target_label": "job"},
            {
                "source_labels": [f"{_LABEL}name", f"{_LABEL}component"],
                "regex": "(.+);(.+)",
                "replacement": "${1}-${2}",
                "target_label": "job",
            },
            {"source_labels": [f"{_ANNOTATION}job"], "regex": "(.+)", "target_label": "job"},
        ],
    }


def node_prometheus(
    node: DevNode, *, progress: Progress, rule_files: list[Path] | None = None
) -> LocalPrometheus:
    """A Prometheus (not started) in the node's namespace, scraping its annotated pods as
    the `prometheus` ServiceAccount, at URL from the host."""
    binary = binaries.prometheus_binary(progress=progress)
    return LocalPrometheus(
        scrape_configs=_scrape_as_scraper(node, progress),
        rule_files=rule_files,
        # The scrape timeout is the interval: an HTTPS scrape that the pod checks
        # with the API server (TokenReview, SubjectAccessReview) can pass 1 s.
        scrape_interval="2s",
        binary=binary,
        command_prefix=IN_NETNS,
        host=NODE_ADDRESS,
        port=PORT,
    )


def start(node: DevNode, *, progress: Progress) -> None:
    """Run the dev node's Prometheus in the background (`wukong dev up --node`); when it
    runs already, only renew its token."""
    component = _component(node)
    scrape_configs = _scrape_as_scraper(node, progress)
    if processes.read_pid(component) is not None:
        progress(f"Prometheus already running at {URL}")
        return
    binary = binaries.prometheus_binary(progress=progress)
    directory = node.paths.root / "prometheus"
    rules = directory / "wukong.rules.yaml"
    directory.mkdir(parents=True, exist_ok=True)
    rules.write_text(render_alert_rules())  # the chart's PrometheusRule groups
    write_config(
        directory / "prometheus.yml",
        scrape_configs=scrape_configs,
        rule_files=[rules],
        scrape_interval="5s",
    )
    progress(f"starting Prometheus {binaries.prometheus_version()} in network namespace {NETNS}")
    argv = server_argv(
        str(binary),
        config=directory / "prometheus.yml",
        data=directory / "data",
        listen=f"{NODE_ADDRESS}:{PORT}",
    )
    proc = processes.start(component, [*IN_NETNS, *argv])
    processes.wait_started(
        component, proc, lambda: is_ready(URL), what="Prometheus /-/ready", timeout=60
    )
    progress(f"Prometheus scrapes pods annotated prometheus.io/scrape=true; API at {URL}")


def stop(node: DevNode, *, progress: Progress) -> None:
    """Stop the dev node's Prometheus, if it runs (its data stays for the next `start`)."""
    if processes.stop(_component(node)):
        progress("stopped Prometheus")


def status(node: DevNode) -> ComponentStatus:
    return component_status(_component(node))


def _component(node: DevNode) -> Component:
    return Component(name="prometheus", state_dir=node.plane.config.state_dir)


def _scrape_as_scraper(node: DevNode, progress: Progress) -> list[dict[str, Any]]:
    """The pod scrape jobs, with a fresh token of the scraper's ServiceAccount."""
    token_file = node.paths.root / "monitoring" / "token"
    progress(f"ServiceAccount {MONITORING_NAMESPACE}/{SCRAPER}: pod discovery, a new token")
    grant_scraper(kubectl=node.kubectl, kubeconfig=node.plane.kubeconfig, token_file=token_file)
    return pod_scrape_configs(
        api_server=f"https://{HOST_ADDRESS}:{node.plane.config.apiserver_port}",
        ca_file=node.plane.ca_cert,
        token_file=token_file,
    )


def _kubectl(kubectl: Path, kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise DevClusterError(f"kubectl {args[0]} {args[1]}: {result.stderr.strip()[:300]}")
    return result.stdout
