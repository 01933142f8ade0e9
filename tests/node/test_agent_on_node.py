"""The node agent as the chart deploys it, on the dev node's real pods.

The chart is installed with the agent DaemonSet on and a reconcile deadline so
short (1 ms) that every reconcile of a Wukong is cancelled with
deadline_exceeded: the agent, in its own pod, traces the operator's pods through
their python:audit probe and attributes each cancellation to namespace, pod and
container from the kubelet's real cgroup paths; its count for the leader equals
the operator's own. Then each capability the chart grants is dropped in turn:
the agent must fail, saying which capability it lacks.
"""

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ebpf.agent_helpers import usdt_semaphore
from tests.exposition import metric_samples
from tests.node.conftest import (
    KUBECTL_POLL,
    MetricsReader,
    NodeCluster,
    create_wukong,
    get_in_node,
    metrics_readers_args,
    metrics_url,
)
from tests.polling import eventually, wait_until
from wukong.dashboards import node_cancellations
from wukong.dashboards.promql import grouping_labels, label_values_expr, substitute_variables
from wukong.dashboards.render import concrete_targets, render_dashboards, variable_queries
from wukong.devcluster import binaries, images
from wukong.devcluster.apis import install_dev_apis
from wukong.devcluster.node_prometheus import MONITORING_NAMESPACE, SCRAPER
from wukong.devcluster.prometheus import LocalPrometheus
from wukong.runtime import Client
from wukong.runtime.resources import LEASES, NAMESPACES

CHART = Path(__file__).resolve().parents[2] / "deploy" / "chart" / "wukong"
CAPABILITIES = ["BPF", "PERFMON", "SYS_PTRACE", "DAC_OVERRIDE"]
AGENT = "app.kubernetes.io/component=node-agent"
OPERATOR = "app.kubernetes.io/component=operator"
# The agent's scrape job in the dev Prometheus (its pods' prometheus.io/job).
AGENT_JOB = "wukong-node-agent"


@pytest.fixture(scope="module")
def release(
    node_cluster: NodeCluster, chart_values: Path, helm: Path, metrics_reader: MetricsReader
) -> Iterator[str]:
    namespace = f"agent-{uuid.uuid4().hex[:6]}"
    asyncio.run(_install_dev_apis(node_cluster.plane.kubeconfig))  # KubeVirt, CDI, ... CRDs
    installed = subprocess.run(
        [
            str(helm),
            f"--kubeconfig={node_cluster.plane.kubeconfig}",
            "install",
            "wukong",
            str(CHART),
            "-n",
            namespace,
            "--create-namespace",
            "-f",
            str(chart_values),
            "--set",
            "agent.enabled=true",
            "--set-json",
            "operator.reconcileTimeout=0.001",
            # This machine runs other people's processes too: leave them alone.
            "--set-json",
            'agent.extraArgs=["--pods-only"]',
            # The test's reader, and the dev Prometheus's account.
            *metrics_readers_args(
                (metrics_reader.namespace, metrics_reader.name), (MONITORING_NAMESPACE, SCRAPER)
            ),
            "--wait",
            "--timeout=180s",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if installed.returncode != 0:
        pods = node_cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide")
        events = node_cluster.kubectl("get", "events", "-n", namespace)
        raise AssertionError(f"helm install: {installed.stderr}\n{pods}\n{events[-3000:]}")
    yield namespace
    subprocess.run(
        [
            str(helm),
            f"--kubeconfig={node_cluster.plane.kubeconfig}",
            *("uninstall", "wukong", "-n", namespace, "--wait"),
        ],
        check=False,
        capture_output=True,
        timeout=300,
    )


async def _install_dev_apis(kubeconfig: Path) -> None:
    async with await Client.from_kubeconfig(kubeconfig) as client:
        await install_dev_apis(client)


async def _start_storm(client: Client) -> str:
    """A Wukong in a new namespace: under the release's 1 ms deadline each of its
    reconciles is cancelled (deadline_exceeded), retried with a backoff capped at 30 s."""
    namespace = f"vms-{uuid.uuid4().hex[:6]}"
    await client.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    )
    await create_wukong(client, namespace)
    return namespace


def remove_storm(cluster: NodeCluster, namespace: str) -> None:
    """The storm's Wukongs and namespace gone for good. Their finalizer cannot run under
    the release's 1 ms deadline: left, they would make the next module's operators
    cancel before its storm starts (counts its agent never saw)."""
    # Deleting first: the operator adds its finalizer back only to a Wukong not deleting.
    cluster.kubectl("delete", "wukongs", "--all", "-n", namespace, "--wait=false", check=False)
    names = cluster.kubectl("get", "wukongs", "-n", namespace, "-o", "name", check=False)
    for name in names.split():
        unfinalized = json.dumps({"metadata": {"finalizers": None}})
        cluster.kubectl(
            "patch", "-n", namespace, name, "--type=merge", f"-p={unfinalized}", check=False
        )
    cluster.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=60s", check=False)


def _pods(cluster: NodeCluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    listing = cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json")
    items: list[dict[str, Any]] = json.loads(listing)["items"]
    return items


async def test_the_agent_attributes_the_operators_cancellations_to_its_pod(
    node_cluster: NodeCluster, release: str, metrics_reader: MetricsReader
) -> None:
    async with await Client.from_kubeconfig(node_cluster.plane.kubeconfig) as client:

        async def leader() -> str:
            lease = await client.get(LEASES, "wukong-operator", namespace=release)
            return str(lease["spec"].get("holderIdentity") or "").rsplit("_", 1)[0]

        operators = {p["metadata"]["name"]: p for p in _pods(node_cluster, release, OPERATOR)}

        async def one_leads() -> bool:
            return await leader() in operators

        await eventually(one_leads, timeout=60, what="an operator pod to lead")
        leading = await leader()
        (agent,) = _pods(node_cluster, release, AGENT)

        def tracing_the_leader() -> bool:
            traced = metric_samples(metrics_reader.get(agent, 9464), "wukong_node_traced_processes")
            return any(
                labels["pod"] == leading and labels["container"] == "operator" and value >= 1
                for labels, value in traced
            )

        # Cancellations from before the probe is on are never seen: the storm
        # starts only once the agent traces the leader.
        await eventually(
            tracing_the_leader, timeout=120, interval=1.0, what="the agent on the leader"
        )
        await _start_storm(client)

        def agent_count() -> dict[tuple[str, str, str, str], float]:
            counts = {}
            text = metrics_reader.get(agent, 9464)
            for labels, value in metric_samples(text, "wukong_node_cancellations_total"):
                key = (labels["namespace"], labels["pod"], labels["container"], labels["reason"])
                counts[key] = value
            return counts

        def operator_count() -> float:
            samples = metric_samples(
                metrics_reader.get(operators[leading], 8080), "wukong_reconcile_cancellations_total"
            )
            return sum(v for labels, v in samples if labels["reason"] == "deadline_exceeded")

        key = (release, leading, "operator", "deadline_exceeded")
        last_read: list[float] = []

        def counted_exactly() -> bool:
            # The agent's count read between two reads of the operator's own: with
            # no event lost and none counted twice it lies between them, however
            # fast the storm goes on (a lagging agent just makes us look again).
            own_before = operator_count()
            counted = agent_count().get(key, 0.0)
            own_after = operator_count()
            last_read[:] = [own_before, counted, own_after]
            return 0 < own_before <= counted <= own_after

        try:
            await eventually(counted_exactly, timeout=120, interval=1.0, what="exact counts")
        except AssertionError as failed:
            message = f"{failed}; read (operator, agent, operator): {last_read}"
            raise AssertionError(message) from None
        counts = agent_count()
        others = {k: v for k, v in counts.items() if k[1] in operators and k[1] != leading}
        assert all(v == 0 for v in others.values()), others
        runtime = metric_samples(metrics_reader.get(agent, 9464), "wukong_node_cancellations_total")
        assert {labels["runtime"] for labels, _ in runtime if labels["pod"] == leading} == {
            "python"
        }


BENCH = Path(__file__).resolve().parents[2] / "bench"
PEER = BENCH / "peers" / "controller-runtime"
sys.path.insert(0, str(BENCH))

from bench_objects import BENCH_OBJECTS, create_objects, install  # noqa: E402

# The Go peer's timeout storm: each BenchObject is reconciled once, under a
# ReconciliationTimeout it outlasts, so it ends with context.DeadlineExceeded.
STORM_OBJECTS = 20
PEER_TIMEOUT = "100ms"


def _peer_image(cluster: NodeCluster, tmp_path: Path) -> str:
    """The benchmark's controller-runtime controller as an image: one static binary."""
    binary = binaries.go_program(
        PEER,
        name="cr-peer-static",
        progress=lambda message: print(message, file=sys.stderr),
        build_flags=["-tags=netgo,osusergo"],  # static: the image holds nothing else
    )
    spec = images.ImageSpec(
        tag="wukong.local/cr-peer:test",
        files=[images.ImageFile(path="/peer", source=binary)],
        entrypoint=["/peer"],
        user="65534:65534",
    )
    images.write_archive(spec, tmp_path / "peer.tar")
    cluster.node.import_image(tmp_path / "peer.tar")
    return spec.tag


def _peer_objects(namespace: str, image: str) -> list[dict[str, Any]]:
    """The peer's pod in its timeout-storm mode, and what it may read."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "peer", "namespace": namespace},
            "rules": [
                {
                    "apiGroups": [BENCH_OBJECTS.group],
                    "resources": [BENCH_OBJECTS.plural],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "peer", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "peer"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "peer", "namespace": namespace},
            "spec": {
                "containers": [
                    {
                        "name": "controller",
                        "image": image,
                        "imagePullPolicy": "Never",
                        # BenchObjects, not ConfigMaps: the namespace has none until
                        # the agent traces the peer (every namespace has a ConfigMap,
                        # kube-root-ca.crt, whose reconcile would time out first).
                        # No leader election (the manager's default): its renew
                        # deadline would be a deadline too.
                        "args": [
                            f"--namespace={namespace}",
                            "--bench-objects",
                            f"--reconcile-timeout={PEER_TIMEOUT}",
                            "--metrics-bind-address=:8080",
                        ],
                    }
                ],
                "terminationGracePeriodSeconds": 10,
            },
        },
    ]


async def test_the_agent_counts_a_go_controller_pods_timeouts_as_the_controller_does(
    node_cluster: NodeCluster, release: str, tmp_path: Path, metrics_reader: MetricsReader
) -> None:
    image = _peer_image(node_cluster, tmp_path)
    namespace = f"cr-{uuid.uuid4().hex[:6]}"
    node_cluster.kubectl("create", "namespace", namespace)
    async with await Client.from_kubeconfig(node_cluster.plane.kubeconfig) as client:
        await install(client)  # the BenchObject CRD
        node_cluster.kubectl(
            "apply", "-f", "-", stdin=yaml.safe_dump_all(_peer_objects(namespace, image))
        )
        node_cluster.kubectl(
            "wait", "-n", namespace, "--for=condition=Ready", "pod/peer", "--timeout=90s"
        )
        (agent,) = _pods(node_cluster, release, AGENT)
        peer_series = (namespace, "peer", "controller", "go")

        def of_the_peer(name: str) -> dict[str, float]:
            """The agent's `name` samples for the peer's container, by reason if any."""
            samples = metric_samples(metrics_reader.get(agent, 9464), name)
            return {
                labels.get("reason", ""): value
                for labels, value in samples
                if (labels["namespace"], labels["pod"], labels["container"], labels["runtime"])
                == peer_series
            }

        # Traced before its first reconcile: nothing it counts can precede the agent.
        await eventually(
            lambda: of_the_peer("wukong_node_traced_processes").get("", 0.0) >= 1,
            timeout=60,
            interval=1.0,
            what="the agent to trace the controller's pod",
        )
        peer = json.loads(node_cluster.kubectl("get", "pod", "peer", "-n", namespace, "-o", "json"))
        peer_url = f"http://{peer['status']['podIP']}:8080/metrics"  # the peer's: plain HTTP
        await create_objects(client, namespace, STORM_OBJECTS)

        def agent_counts() -> dict[str, float]:
            return of_the_peer("wukong_node_cancellations_total")

        def peer_count() -> float:
            status, text = get_in_node(peer_url, token=None)
            assert status == 200, (status, text)
            samples = metric_samples(text, "peer_reconcile_cancellations_total")
            return sum(v for labels, v in samples if labels["reason"] == "deadline_exceeded")

        # The agent counts every Go context that ends; the controller counts
        # its reconciles. They meet on deadline_exceeded, the deadlines that
        # fire: with no leader election and no client timeout configured, the
        # only ones in this process are the reconciles' (client-go's and the
        # dialer's deadlined contexts end by cancel() when their work is done,
        # as `canceled`), and the context each reconcile derives from its own
        # is `parent_cancelled`, so one timeout is one count. The other reasons
        # are not the controller's to count: the metrics server's connection
        # and request contexts (these very scrapes), controller-runtime's
        # per-event handler contexts, the derived ones, the manager's at shutdown.
        last: list[float] = []

        def counted_exactly() -> bool:
            # The agent's count read between two reads of the peer's own (as for
            # the operator above): none lost, none counted twice.
            own_before = peer_count()
            counted = agent_counts().get("deadline_exceeded", 0.0)
            own_after = peer_count()
            last[:] = [own_before, counted, own_after]
            return STORM_OBJECTS <= own_before <= counted <= own_after

        try:
            await eventually(
                counted_exactly,
                timeout=120,
                interval=1.0,
                what="the agent's deadline count between two of the controller's",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc} (last: controller, agent, controller = {last})") from None
    # Each object timed out once (none retried): the storm was exactly this long.
    assert peer_count() == STORM_OBJECTS
    assert agent_counts()["deadline_exceeded"] == STORM_OBJECTS
    # Each reconcile's derived context was seen too, as propagated.
    wait_until(
        lambda: agent_counts().get("parent_cancelled", 0.0) >= STORM_OBJECTS,
        timeout=30,
        interval=KUBECTL_POLL,
        what="the reconciles' derived contexts",
    )
    propagated = agent_counts()["parent_cancelled"]
    # The manager's shutdown cancels every runnable's context, the children by
    # propagation: Go cancellations attributed to the pod, none of them a deadline.
    node_cluster.kubectl("delete", "pod", "peer", "-n", namespace, "--wait=true")
    wait_until(
        lambda: agent_counts().get("parent_cancelled", 0.0) > propagated,
        timeout=60,
        interval=KUBECTL_POLL,
        what="the controller's shutdown to be traced",
    )
    assert agent_counts()["deadline_exceeded"] == STORM_OBJECTS
    series = metric_samples(metrics_reader.get(agent, 9464), "wukong_node_cancellations_total")
    assert {
        (labels["pod"], labels["container"], labels["runtime"])
        for labels, _ in series
        if labels["namespace"] == namespace
    } == {("peer", "controller", "go")}
    node_cluster.kubectl("delete", "namespace", namespace, "--wait=false")


def _terminated_message(pod: dict[str, Any]) -> str:
    for status in pod.get("status", {}).get("containerStatuses", []):
        for state in (status.get("state", {}), status.get("lastState", {})):
            message = state.get("terminated", {}).get("message")
            if message:
                return str(message)
    return ""


def test_prometheus_keeps_the_agents_labels_naming_the_traced_pods(
    node_cluster: NodeCluster, release: str, node_prometheus: LocalPrometheus
) -> None:
    """Scraped by a pod-discovering Prometheus, the agent's series still name the pods
    it traces (honor_labels), not the agent's own pod; `node` tells agents apart."""
    operators = {p["metadata"]["name"] for p in _pods(node_cluster, release, OPERATOR)}
    (agent,) = _pods(node_cluster, release, AGENT)
    query = f'wukong_node_traced_processes{{namespace="{release}", container="operator"}}'

    def traced_operators() -> set[str]:
        return {s["metric"]["pod"] for s in node_prometheus.query(query)}

    wait_until(
        lambda: traced_operators() == operators,
        timeout=120,
        interval=KUBECTL_POLL,
        what="Prometheus to hold the agent's series for both operator pods",
    )
    for series in node_prometheus.query(query):
        labels = series["metric"]
        assert labels["node"] == agent["spec"]["nodeName"]
        assert labels["job"] == AGENT_JOB
        assert labels["instance"] == f"{agent['status']['podIP']}:9464"
        assert not any(name.startswith("exported_") for name in labels), labels


Series = list[dict[str, Any]]


def _values(series: Series, label: str) -> dict[str, float]:
    return {s["metric"].get(label, ""): float(s["value"][1]) for s in series}


async def test_every_node_dashboard_query_shows_the_storm_on_prometheus(
    node_cluster: NodeCluster, release: str, node_prometheus: LocalPrometheus
) -> None:
    """The node dashboard's queries, variables set as Grafana sets them for this node and
    the release's namespace, run on the node's Prometheus while the agent traces a
    storm: each parses, returns series labelled as its panel groups them, and shows
    the storm; each variable offers the value chosen. Every panel has data here,
    the losses, the untraced processes and the series cap's overflow too: the agent
    creates those series at 0 when it starts, so none is a 0, not a gap."""
    operators = {p["metadata"]["name"] for p in _pods(node_cluster, release, OPERATOR)}
    (agent,) = _pods(node_cluster, release, AGENT)
    node = agent["spec"]["nodeName"]
    variables = {
        "job": AGENT_JOB,
        "node": node,
        "namespace": release,
        # Grafana's $__rate_interval: 4 scrape intervals of its data source (15 s by default).
        "__rate_interval": "1m",
        "__interval": "2s",
    }
    dashboard = json.loads(render_dashboards()[f"{node_cancellations.UID}.json"])
    queries = {t.title: t.expr for t in concrete_targets(dashboard, variables)}

    def storm_by(label: str, value: str) -> Callable[[Series], bool]:
        return lambda series: _values(series, label).get(value, 0.0) > 0

    # What each panel must show; a new panel fails here until it says what it shows.
    shows: dict[str, Callable[[Series], bool]] = {
        "Cancellations by node": storm_by("node", node),
        "Cancellations by pod": lambda series: any(
            _values(series, "pod").get(pod, 0.0) > 0 for pod in operators
        ),
        "Cancellations by runtime": storm_by("runtime", "python"),
        "Cancellations by reason": storm_by("reason", "deadline_exceeded"),
        "Processes traced": lambda series: (
            _values(series, "runtime").get("python", 0.0) >= len(operators)
        ),
        "Events lost": lambda series: "python" in _values(series, "runtime"),
        # Series at 0 from the agent's start: shown as a flat 0, not a gap.
        "Processes not traced": lambda series: "python" in _values(series, "runtime"),
        "Cancellations over the series cap": lambda series: node in _values(series, "node"),
    }
    assert sorted(queries) == sorted(shows), "one query per panel, each panel checked"
    readings: dict[str, Series] = {}

    def showing(*titles: str) -> bool:
        # A query that does not parse fails at once: Prometheus answers 400.
        readings.update({title: node_prometheus.query(queries[title]) for title in titles})
        return all(shows[title](readings[title]) for title in titles)

    async with await Client.from_kubeconfig(node_cluster.plane.kubeconfig) as client:
        # Cancellations from before the probes are on are never seen.
        await eventually(
            lambda: showing("Processes traced"),
            timeout=120,
            interval=1.0,
            what="Prometheus to see the agent tracing both operator pods",
        )
        storm = await _start_storm(client)
        try:
            await eventually(
                lambda: showing(*shows), timeout=120, interval=1.0, what="every panel to show it"
            )
        except AssertionError as failed:
            raise AssertionError(f"{failed}; last read: {readings}") from None
    # The variables offer the values chosen above, each resolved with the ones before it.
    for name, query in variable_queries(dashboard).items():
        expr = label_values_expr(substitute_variables(query, variables))
        options = {value for s in node_prometheus.query(expr) for value in s["metric"].values()}
        assert variables[name] in options, (name, expr, options)
    # Each series labelled as its panel groups (and names) it, as the variables chose.
    chosen = {"node": {node}, "namespace": {release}, "pod": operators}
    for title, expr in queries.items():
        for series in readings[title]:
            labels = series["metric"]
            assert set(labels) == grouping_labels(expr), (title, labels)
            for label, value in labels.items():
                assert value in chosen.get(label, {value}), (title, labels)
    node_cluster.kubectl("delete", "namespace", storm, "--wait=false")


def test_the_agent_runs_with_exactly_the_charts_capabilities_and_needs_each(
    node_cluster: NodeCluster, release: str
) -> None:
    daemonset = json.loads(
        node_cluster.kubectl("get", "daemonset", "wukong-agent", "-n", release, "-o", "json")
    )
    security = daemonset["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"], "add": CAPABILITIES}
    assert security["privileged"] is False
    (agent,) = _pods(node_cluster, release, AGENT)
    assert agent["status"]["containerStatuses"][0]["ready"] is True

    path = "/spec/template/spec/containers/0/securityContext/capabilities/add"
    try:
        for dropped in CAPABILITIES:
            kept = [c for c in CAPABILITIES if c != dropped]
            patch = [{"op": "replace", "path": path, "value": kept}]
            node_cluster.kubectl(
                "patch",
                "daemonset",
                "wukong-agent",
                "-n",
                release,
                "--type=json",
                f"-p={json.dumps(patch)}",
            )

            def failed_naming_it(kept: list[str] = kept, dropped: str = dropped) -> bool:
                for pod in _pods(node_cluster, release, AGENT):
                    caps = pod["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]
                    if caps == kept and f"CAP_{dropped}" in _terminated_message(pod):
                        return True
                return False

            wait_until(
                failed_naming_it,
                timeout=120,
                interval=KUBECTL_POLL,
                what=f"the agent to fail without {dropped}",
            )
            (pod,) = [
                p
                for p in _pods(node_cluster, release, AGENT)
                if p["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] == kept
            ]
            message = _terminated_message(pod).strip().splitlines()[-1]
            assert message.startswith("wukong: error:") and f"lacks CAP_{dropped}" in message
    finally:
        patch = [{"op": "replace", "path": path, "value": CAPABILITIES}]
        node_cluster.kubectl(
            "patch",
            "daemonset",
            "wukong-agent",
            "-n",
            release,
            "--type=json",
            f"-p={json.dumps(patch)}",
        )
        # The tests after this one start from the chart's agent, running and ready.
        node_cluster.kubectl(
            "rollout", "status", "daemonset/wukong-agent", "-n", release, "--timeout=180s"
        )


def _host_pids(cmdline_part: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if cmdline_part in cmdline:
                pids.append(int(entry.name))
    return pids


def test_a_deleted_agent_pod_detaches_and_leaves_the_operator_unprobed(
    node_cluster: NodeCluster, release: str
) -> None:
    # The operator's own processes on the host, through their cgroups' pods.
    operators = _host_pids(f"--leader-election-namespace={release}")
    assert operators

    def agent_pod() -> dict[str, Any] | None:
        pods = [p for p in _pods(node_cluster, release, AGENT) if p["status"].get("podIP")]
        ready = [p for p in pods if p["status"].get("containerStatuses", [{}])[0].get("ready")]
        return ready[0] if len(ready) == 1 and len(pods) == 1 else None

    attached: list[dict[str, Any]] = []

    def one_agent_attached() -> bool:
        # Both seen in one pass: the pod read once and the probes it enabled.
        pod = agent_pod()
        if pod is None or not all(usdt_semaphore(pid) > 0 for pid in operators):
            return False
        attached.append(pod)
        return True

    wait_until(
        one_agent_attached,
        timeout=180,
        interval=KUBECTL_POLL,
        what="one ready agent pod, with the operators' USDT probes enabled",
    )
    pod = attached[-1]
    uid = pod["metadata"]["uid"]
    (agent_pid,) = [
        pid
        for pid in _host_pids("wukong agent")
        if uid.replace("-", "_") in Path(f"/proc/{pid}/cgroup").read_text().replace("-", "_")
    ]
    node_cluster.kubectl("delete", "pod", "-n", release, pod["metadata"]["name"], "--wait=true")
    # SIGTERM: the agent detached before exiting, so nothing it set up remains.
    assert all(usdt_semaphore(pid) == 0 for pid in operators)
    events = Path("/sys/kernel/tracing/uprobe_events").read_text()
    assert f"_bcc_{agent_pid}" not in events


def test_metrics_answer_only_the_charts_readers(
    node_cluster: NodeCluster, release: str, metrics_reader: MetricsReader
) -> None:
    def serving(selector: str, port: int) -> list[dict[str, Any]]:
        pods = [p for p in _pods(node_cluster, release, selector) if p["status"].get("podIP")]
        answered = all(get_in_node(metrics_url(p, port), token=None)[0] for p in pods)
        return pods if answered else []

    # Earlier tests replaced the agent's pod: wait for the one now running to listen.
    wait_until(
        lambda: len(serving(AGENT, 9464)) == 1,
        timeout=120,
        interval=KUBECTL_POLL,
        what="one agent pod serving",
    )
    targets = [(pod, 9464) for pod in serving(AGENT, 9464)]
    targets += [(pod, 8080) for pod in serving(OPERATOR, 8080)]
    assert len(targets) == 3
    for pod, port in targets:
        url = metrics_url(pod, port)
        assert "# TYPE" in metrics_reader.get(pod, port)
        status, body = get_in_node(url, token=metrics_reader.unauthorised_token)
        assert status == 403, (url, body)
        # Generic: who asked and why stays in the serving process's DEBUG log.
        assert body == "Forbidden\n", body
        assert get_in_node(url, token=None)[0] == 401
        annotations = pod["metadata"]["annotations"]
        assert (annotations["prometheus.io/scheme"], annotations["prometheus.io/port"]) == (
            "https",
            str(port),
        )
