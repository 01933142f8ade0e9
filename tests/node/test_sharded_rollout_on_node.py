"""Three sharded operator replicas from the chart, through a rolling restart, on the dev node.

`helm install` with `operator.replicas=3` and `operator.sharding` on, its /metrics
scraped by the node's Prometheus with the chart's alert rules loaded. Wukongs in
namespaces of every shard are brought to Running (the simulator plays KubeVirt
and CDI) and the shard Leases are split fairly among the three pods. Then a
rolling restart as `kubectl rollout restart` makes it (the pod template's
`kubectl.kubernetes.io/restartedAt`), the Wukongs touched all along. Once the
rollout is done: the shards are split among the new pods only, every handoff was
a release (none waited for a Lease to run out), a spec change made after the
restart is reconciled for every Wukong and every one is still Running, the old
pods' logs hold no ERROR line, and no alert the chart's rules give severity error
or critical was pending or firing at any point: not in /api/v1/alerts, not in
the ALERTS series over the window (the rules evaluated throughout it).
"""

import asyncio
import json
import math
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import yaml

from tests.integration.helpers import running
from tests.integration.test_shards import (
    OPERATOR_SHARDS,
    _shard_holders,
    tenants_in_every_shard,
)
from tests.node.conftest import CHART, KUBECTL_POLL, NodeCluster, metrics_readers_args
from tests.node.test_chart_on_node import _helm, _pods, _ready
from tests.node.test_monitoring_on_node import (
    JOB,
    SELECTOR,
    _collect,
    _error_lines,
    _follow_logs,
    _scraped_pods,
    _touch,
)
from tests.polling import eventually
from wukong.devcluster.apis import install_dev_apis
from wukong.devcluster.node_prometheus import MONITORING_NAMESPACE, SCRAPER
from wukong.devcluster.prometheus import LocalPrometheus
from wukong.devcluster.simulator import SimulationConfig, simulator_manager
from wukong.operator.api import WUKONGS
from wukong.runtime import Client, NotFound
from wukong.runtime.apis import VIRTUAL_MACHINES

REPLICAS = 3
TENANTS = OPERATOR_SHARDS  # at least one namespace in every shard
WUKONGS_PER_TENANT = 2
SEVERE = ("error", "critical")


def _severe_alerts() -> list[str]:
    """The chart's alerts of severity error or critical."""
    groups = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    return sorted(
        rule["alert"]
        for group in groups
        for rule in group["rules"]
        if "alert" in rule and rule.get("labels", {}).get("severity") in SEVERE
    )


def _pod_holders(holders: dict[int, str]) -> dict[int, str]:
    """Shard: the pod holding it (an identity is the pod's name and a suffix)."""
    return {
        shard: agent.removeprefix("wukong/").rsplit("_", 1)[0] for shard, agent in holders.items()
    }


async def _split_among(client: Client, namespace: str, pods: set[str]) -> bool:
    """Every shard held, by `pods` only, OPERATOR_SHARDS / REPLICAS each."""
    holders = _pod_holders(await _shard_holders(client, namespace))
    counts = [list(holders.values()).count(pod) for pod in pods]
    return len(holders) == OPERATOR_SHARDS and counts == [OPERATOR_SHARDS // REPLICAS] * len(pods)


def _rolled_out(cluster: NodeCluster, namespace: str, old: set[str]) -> bool:
    """As `kubectl rollout status` sees it done, and the old pods gone."""
    deployment = json.loads(
        cluster.kubectl("get", "deployment", "wukong", "-n", namespace, "-o", "json")
    )
    status, generation = deployment["status"], deployment["metadata"]["generation"]
    done = status.get("observedGeneration", 0) >= generation and all(
        status.get(field) == REPLICAS
        for field in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")
    )
    pods = _pods(cluster, namespace, SELECTOR)
    names = {p["metadata"]["name"] for p in pods}
    return done and len(pods) == REPLICAS and not names & old and all(map(_ready, pods))


async def _unreconciled(client: Client, tenants: list[str], cores: int) -> list[str]:
    """The Wukongs not Running, whose spec is not observed yet, or whose VM has not
    `cores` cores."""
    left = []
    for tenant in tenants:
        for wukong in (await client.list(WUKONGS, namespace=tenant))["items"]:
            name, status = wukong["metadata"]["name"], wukong.get("status") or {}
            try:
                vm = await client.get(VIRTUAL_MACHINES, name, namespace=tenant)
            except NotFound:  # not reconciled yet: its VM is still to be made
                left.append(f"{tenant}/{name}")
                continue
            vm_cores = vm["spec"]["template"]["spec"]["domain"]["cpu"]["cores"]
            if (
                status.get("phase") != "Running"
                or status.get("observedGeneration") != wukong["metadata"]["generation"]
                or vm_cores != cores
            ):
                left.append(f"{tenant}/{name}")
    return left


def _evaluated_since(prometheus: LocalPrometheus, alerts: list[str], since: float) -> bool:
    """Every rule of `alerts` loaded, healthy and evaluated after `since`."""
    rules = {r["name"]: r for g in prometheus.rules() for r in g["rules"] if r["name"] in alerts}
    return set(rules) == set(alerts) and all(
        rule["health"] == "ok"
        and datetime.fromisoformat(rule["lastEvaluation"]).timestamp() > since
        for rule in rules.values()
    )


async def test_a_rolling_restart_of_sharded_replicas_keeps_every_wukong_reconciled(
    node_cluster: NodeCluster, chart_values: Path, helm: Path, node_prometheus: LocalPrometheus
) -> None:
    prometheus = node_prometheus
    severe = _severe_alerts()
    assert severe, "the chart has no alert of severity error or critical to watch"
    release_ns = f"wukong-{uuid.uuid4().hex[:6]}"
    async with await Client.from_kubeconfig(node_cluster.plane.kubeconfig) as client:
        await install_dev_apis(client)
        _helm(
            helm,
            node_cluster,
            "install",
            "wukong",
            str(CHART),
            "--create-namespace",
            *("-n", release_ns, "-f", str(chart_values), "--wait", "--timeout=180s"),
            *metrics_readers_args((MONITORING_NAMESPACE, SCRAPER)),
            f"--set=operator.replicas={REPLICAS}",
            "--set=operator.sharding.enabled=true",
            f"--set=operator.sharding.shards={OPERATOR_SHARDS}",
        )
        old = {p["metadata"]["name"] for p in _pods(node_cluster, release_ns, SELECTOR)}
        assert len(old) == REPLICAS
        await eventually(
            lambda: _split_among(client, release_ns, old),
            timeout=60,
            what="the shards split among the three pods",
        )
        await eventually(
            lambda: set(_scraped_pods(prometheus, release_ns)) == old,
            timeout=60,
            interval=KUBECTL_POLL,
            what="Prometheus to scrape the three pods",
        )

        tenants = await tenants_in_every_shard(client, "vms", TENANTS)
        names = [f"vm-{i}" for i in range(WUKONGS_PER_TENANT)]
        simulator = simulator_manager(client=client, config=SimulationConfig())
        async with running(simulator):
            for tenant in tenants:
                for name in names:
                    await client.create(
                        WUKONGS,
                        {
                            "apiVersion": WUKONGS.api_version,
                            "kind": "Wukong",
                            "metadata": {"name": name, "namespace": tenant},
                            "spec": {"cpu": 1},
                        },
                    )
            await eventually(
                lambda: _none_left(client, tenants, cores=1),
                timeout=180,
                interval=1.0,
                what="every Wukong Running",
            )

            # The rolling restart, the Wukongs touched all along (each touch a reconcile).
            start = math.ceil(time.time())
            await eventually(
                lambda: _evaluated_since(prometheus, severe, start),
                timeout=30,
                interval=KUBECTL_POLL,
                what=f"{severe} evaluated",
            )
            followers = {pod: _follow_logs(node_cluster, release_ns, pod) for pod in old}
            stop = asyncio.Event()
            touchers = [asyncio.create_task(_touch(client, t, names, stop)) for t in tenants]
            try:
                restarted_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                annotation = {"kubectl.kubernetes.io/restartedAt": restarted_at}
                patch = {"spec": {"template": {"metadata": {"annotations": annotation}}}}
                node_cluster.kubectl(
                    "patch", "deployment", "wukong", "-n", release_ns, "-p", json.dumps(patch)
                )
                restarting = time.monotonic()
                await eventually(
                    lambda: _rolled_out(node_cluster, release_ns, old),
                    timeout=300,
                    interval=2.0,
                    what="the rollout to finish",
                )
                print(f"rolled out in {time.monotonic() - restarting:.1f}s")
                new = {p["metadata"]["name"] for p in _pods(node_cluster, release_ns, SELECTOR)}
                await eventually(
                    lambda: _split_among(client, release_ns, new),
                    timeout=60,
                    what="the shards split among the new pods",
                )
            finally:
                stop.set()
                touches = await asyncio.gather(*touchers)
                logs = {pod: await asyncio.to_thread(_collect, f) for pod, f in followers.items()}
            assert min(touches) >= 2, "the Wukongs were not touched during the rollout"

            # A change after the restart: every Wukong's VM gets it, each still Running.
            for tenant in tenants:
                for name in names:
                    await client.patch(WUKONGS, name, {"spec": {"cpu": 2}}, namespace=tenant)
            await eventually(
                lambda: _none_left(client, tenants, cores=2),
                timeout=120,
                interval=1.0,
                what="the spec change reconciled for every Wukong",
            )
        await eventually(
            lambda: set(_scraped_pods(prometheus, release_ns)) == new,
            timeout=60,
            interval=KUBECTL_POLL,
            what="Prometheus to scrape the new pods and drop the old",
        )
        end = math.ceil(time.time())
        await eventually(
            lambda: _evaluated_since(prometheus, severe, end),
            timeout=30,
            interval=KUBECTL_POLL,
            what=f"{severe} evaluated after the window",
        )

        # Every shard went to the new pods (their counters count from their start, in
        # the window), and no Lease of any pod ran out: every handoff was a release.
        window = f"{end - start + 10}s"
        pods = "|".join(sorted(new))
        acquired = prometheus.query(
            f'sum(wukong_shard_handoffs_total{{namespace="{release_ns}", pod=~"{pods}", '
            'reason="acquired"})'
        )
        assert acquired and float(acquired[0]["value"][1]) >= OPERATOR_SHARDS, acquired
        lost = prometheus.query(
            f'max_over_time(wukong_shard_handoffs_total{{namespace="{release_ns}", '
            f'reason="lost"}}[{window}]) > 0'
        )
        assert lost == [], lost

        # No severe alert pending or firing, now or at any evaluation in the window.
        alert_names = "|".join(severe)
        active = [a for a in prometheus.alerts() if a["labels"]["alertname"] in severe]
        assert active == [], active
        seen = prometheus.query(f'max_over_time(ALERTS{{alertname=~"{alert_names}"}}[{window}])')
        assert seen == [], seen
        scraped = prometheus.query(
            f'count(workqueue_depth{{namespace="{release_ns}", job="{JOB}"}})'
        )
        assert scraped and float(scraped[0]["value"][1]) > 0, "the rules' inputs were never scraped"

        for pod, output in logs.items():
            assert "Wukong operator stopped" in output, f"{pod}'s log ends early:\n{output}"
            assert _error_lines(output) == [], f"{pod} logged errors"

        _helm(helm, node_cluster, "uninstall", "wukong", "-n", release_ns, "--wait")
    node_cluster.kubectl("delete", "namespace", release_ns, *tenants, "--wait=false")


async def _none_left(client: Client, tenants: list[str], *, cores: int) -> bool:
    return not await _unreconciled(client, tenants, cores)
