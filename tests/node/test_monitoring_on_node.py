"""The chart's operator scraped by the dev Prometheus, through a `helm upgrade`.

Prometheus runs in the node's network namespace (`node_prometheus`) and finds
the operator pods through the API server by their `prometheus.io/*`
annotations, as the ServiceAccount `wukong-monitoring/prometheus`, with the
chart's alert rules loaded. The test installs the chart (its /metrics HTTPS,
that account listed in `metrics.readers`), checks the labels of the scraped
series and that they came over HTTPS, gets Wukongs to Running and keeps
touching them (each touch is a reconcile), then `helm upgrade`s with a pod
annotation changed, which replaces both pods. Afterwards: the new pods are
scraped and reconcile, the error-rate alert's expression had a value at every
step of the window and the alert was never pending or firing in it, and the
old pods' logs, followed until their containers ended, hold no ERROR line.
"""

import asyncio
import contextlib
import json
import math
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from tests.integration.helpers import running
from tests.node.conftest import NodeCluster, create_wukong, metrics_readers_args
from tests.node.test_chart_on_node import CHART, _helm, _pods
from tests.polling import eventually
from wukong.devcluster.apis import install_dev_apis
from wukong.devcluster.node_prometheus import MONITORING_NAMESPACE, SCRAPER
from wukong.devcluster.prometheus import LocalPrometheus
from wukong.devcluster.simulator import SimulationConfig, simulator_manager
from wukong.operator.api import WUKONGS
from wukong.operator.controller import CONTROLLER_NAME
from wukong.operator.wukongset import CONTROLLER_NAME as WUKONGSET_CONTROLLER
from wukong.runtime import Client
from wukong.runtime.resources import NAMESPACES

SELECTOR = "app.kubernetes.io/name=wukong,app.kubernetes.io/component=operator"
# The release is `wukong`: the chart's metrics Service, and so the job, is wukong-metrics.
JOB = "wukong-metrics"
ERROR_ALERT = "WukongReconcileErrors"
WUKONG_COUNT = 3


def _scraped_pods(prometheus: LocalPrometheus, namespace: str) -> dict[str, dict[str, str]]:
    """The labels of the `up == 1` series of `namespace`'s targets, by pod."""
    return {
        s["metric"]["pod"]: s["metric"]
        for s in prometheus.query(f'up{{namespace="{namespace}"}} == 1')
    }


def _error_alert(prometheus: LocalPrometheus) -> dict[str, Any]:
    rules = [r for g in prometheus.rules() for r in g["rules"] if r["name"] == ERROR_ALERT]
    assert len(rules) == 1, f"{ERROR_ALERT} not loaded"
    rule: dict[str, Any] = rules[0]
    return rule


def _ratio_now(prometheus: LocalPrometheus, ratio: str, namespace: str) -> bool:
    """True if the error ratio of `namespace`'s Wukong controller is a number now (the
    WukongSet controller, with no reconciles here, has none)."""
    series = prometheus.query(ratio)
    values = [
        float(s["value"][1])
        for s in series
        if s["metric"].get("namespace") == namespace
        and s["metric"].get("controller") == CONTROLLER_NAME
    ]
    return len(values) == 1 and math.isfinite(values[0])


def _follow_logs(cluster: NodeCluster, namespace: str, pod: str) -> "subprocess.Popen[str]":
    """`kubectl logs -f`: ends when the container does, so it sees the shutdown."""
    return subprocess.Popen(
        [
            str(cluster.kubectl_path),
            f"--kubeconfig={cluster.plane.kubeconfig}",
            "logs",
            "-f",
            "-n",
            namespace,
            pod,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _error_lines(log: str) -> list[str]:
    errors = []
    for line in log.splitlines():
        try:
            level = json.loads(line).get("level")
        except ValueError:  # not a JSON record: a traceback, say
            level = "ERROR" if ("ERROR" in line or "Traceback" in line) else None
        if level in ("ERROR", "CRITICAL"):
            errors.append(line)
    return errors


async def _touch(client: Client, namespace: str, names: list[str], stop: asyncio.Event) -> int:
    """Annotate every Wukong each second until `stop`: each change is a reconcile."""
    ticks = 0
    while not stop.is_set():
        ticks += 1
        for name in names:
            annotations = {"test.wukong.dev/tick": str(ticks)}
            await client.patch(
                WUKONGS, name, {"metadata": {"annotations": annotations}}, namespace=namespace
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
    return ticks


def _collect(follower: "subprocess.Popen[str]") -> str:
    """What a `_follow_logs` printed; it ends with the container (killed if it does not)."""
    try:
        output, _ = follower.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        follower.kill()
        output, _ = follower.communicate()
    return output


async def _upgrade_under_load(
    prometheus: LocalPrometheus,
    cluster: NodeCluster,
    helm: Path,
    release_ns: str,
    old: dict[str, str],
    upgrade: tuple[str, ...],
) -> int:
    """`helm upgrade` with a new pod annotation; return (as a Prometheus timestamp) when
    the new pods are scraped and one has reconciled, the old ones gone."""
    rollout = uuid.uuid4().hex
    # In a thread: the event loop goes on touching Wukongs meanwhile.
    await asyncio.to_thread(
        _helm,
        helm,
        cluster,
        "upgrade",
        "wukong",
        str(CHART),
        f"--set=operator.podAnnotations.rollout={rollout}",
        *upgrade,
    )

    def replaced() -> bool:
        pods = _pods(cluster, release_ns, SELECTOR)
        return len(pods) == 2 and not {p["metadata"]["name"] for p in pods} & set(old)

    await eventually(replaced, timeout=120, what="the old operator pods to be gone")
    new_pods = _pods(cluster, release_ns, SELECTOR)
    new = {p["metadata"]["name"] for p in new_pods}
    assert all(p["metadata"]["annotations"]["rollout"] == rollout for p in new_pods), (
        "the new pods do not come from the upgraded template"
    )

    await eventually(
        lambda: set(_scraped_pods(prometheus, release_ns)) == new,
        timeout=60,
        what="Prometheus to scrape the new pods and drop the old",
    )
    new_reconciles = (
        f'sum(controller_runtime_reconcile_total{{namespace="{release_ns}", '
        f'pod=~"{"|".join(sorted(new))}"}})'
    )

    def new_pods_reconciled() -> bool:
        # Beyond the new leader's first pass over the Wukongs: touches reach it too.
        result = prometheus.query(new_reconciles)
        return bool(result) and float(result[0]["value"][1]) > 2 * WUKONG_COUNT

    await eventually(
        new_pods_reconciled, timeout=90, what="the new pods' reconcile counters to advance"
    )
    return math.floor(time.time())


async def test_prometheus_scrapes_the_operator_pods_through_a_helm_upgrade_without_an_error_alert(
    node_cluster: NodeCluster, chart_values: Path, helm: Path, node_prometheus: LocalPrometheus
) -> None:
    prometheus = node_prometheus
    release_ns = f"wukong-{uuid.uuid4().hex[:6]}"
    async with await Client.from_kubeconfig(node_cluster.plane.kubeconfig) as client:
        await install_dev_apis(client)
        # /metrics is HTTPS and answers only listed readers: list the scraper's account.
        install = (
            *("-n", release_ns, "-f", str(chart_values), "--wait", "--timeout=180s"),
            *metrics_readers_args((MONITORING_NAMESPACE, SCRAPER)),
        )
        _helm(helm, node_cluster, "install", "wukong", str(CHART), "--create-namespace", *install)
        old_pods = _pods(node_cluster, release_ns, SELECTOR)
        old = {p["metadata"]["name"]: p["status"]["podIP"] for p in old_pods}
        assert len(old) == 2

        # Both pods found through the API server and scraped, labelled as dashboards expect.
        await eventually(
            lambda: set(_scraped_pods(prometheus, release_ns)) == set(old),
            timeout=60,
            what="Prometheus to scrape both operator pods",
        )
        for pod, labels in _scraped_pods(prometheus, release_ns).items():
            labels.pop("__name__", None)
            assert labels == {
                "namespace": release_ns,
                "pod": pod,
                "container": "operator",
                "job": JOB,
                "instance": f"{old[pod]}:8080",
            }
        scraped_at = {t["labels"]["pod"]: t["scrapeUrl"] for t in prometheus.targets()}
        assert {pod: scraped_at.get(pod) for pod in old} == {
            pod: f"https://{ip}:8080/metrics" for pod, ip in old.items()
        }
        series = prometheus.query(f'controller_runtime_reconcile_total{{namespace="{release_ns}"}}')
        assert {s["metric"]["pod"] for s in series} == set(old)
        for s in series:
            assert (s["metric"]["namespace"], s["metric"]["job"]) == (release_ns, JOB)
        # Each pod serves a series per controller it runs, at 0 from the start.
        assert {s["metric"]["controller"] for s in series} == {
            CONTROLLER_NAME,
            WUKONGSET_CONTROLLER,
        }

        # The chart's error-rate alert is loaded; its expression without the thresholds
        # is the error ratio.
        alert = _error_alert(prometheus)
        ratio = re.sub(r"\s*>\s*[0-9.]+", "", alert["query"])
        assert ratio != alert["query"]

        # Wukongs reconciled to Running by the operator, infrastructure simulated.
        vms = f"vms-{uuid.uuid4().hex[:6]}"
        await client.create(
            NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": vms}}
        )
        names = [f"vm-{index}" for index in range(WUKONG_COUNT)]
        simulator = simulator_manager(client=client, config=SimulationConfig())
        async with running(simulator):
            for name in names:
                await create_wukong(client, vms, name)

            async def all_running() -> bool:
                listed = await client.list(WUKONGS, namespace=vms)
                phases = [(w.get("status") or {}).get("phase") for w in listed["items"]]
                return phases == ["Running"] * WUKONG_COUNT

            await eventually(all_running, timeout=180, what="the Wukongs to be Running")

            # The upgrade, under load: a changed pod template replaces both pods. The
            # window opens once the error ratio has a value (reconciles were scraped).
            followers = {pod: _follow_logs(node_cluster, release_ns, pod) for pod in old}
            stop = asyncio.Event()
            toucher = asyncio.create_task(_touch(client, vms, names, stop))
            try:
                await eventually(
                    lambda: _ratio_now(prometheus, ratio, release_ns),
                    timeout=60,
                    what="the error ratio to have a value",
                )
                start = math.ceil(time.time())  # not before the value just seen
                end = await _upgrade_under_load(
                    prometheus, node_cluster, helm, release_ns, old, install
                )
            finally:
                stop.set()
                touches = await toucher
                logs = {pod: await asyncio.to_thread(_collect, f) for pod, f in followers.items()}
        assert touches >= 2, "the Wukongs were not touched during the rollout"

        # The error-rate alert: evaluated, never pending nor firing in the window, and
        # its error ratio a number (not "no data", not NaN) at every step of it, or the
        # alert could not have fired.
        assert _error_alert(prometheus)["health"] == "ok"
        steps = prometheus.query_range(ratio, start=start, end=end, step=1)
        ours = [
            s
            for s in steps
            if s["metric"].get("namespace") == release_ns
            and s["metric"].get("controller") == CONTROLLER_NAME
        ]
        assert len(ours) == 1, steps
        assert ours[0]["metric"] == {
            "namespace": release_ns,
            "job": JOB,
            "controller": CONTROLLER_NAME,
        }
        values = ours[0]["values"]
        assert len(values) == end - start + 1, f"the ratio had no value at some steps: {values}"
        assert all(math.isfinite(float(value)) for _, value in values), values
        window = math.ceil(time.time()) - start + 1
        fired = prometheus.query(
            f'max_over_time(ALERTS{{alertname="{ERROR_ALERT}", namespace="{release_ns}"}}'
            f"[{window}s])"
        )
        assert fired == [], fired

        # The old pods' logs, up to their containers' end, hold no ERROR line.
        for pod, output in logs.items():
            assert "Wukong operator stopped" in output, f"{pod}'s log ends early:\n{output}"
            assert _error_lines(output) == [], f"{pod} logged errors"

        _helm(helm, node_cluster, "uninstall", "wukong", "-n", release_ns, "--wait")
    node_cluster.kubectl("delete", "namespace", release_ns, vms, "--wait=false")
