"""A cancel storm, seen the way an SRE sees it: through a real Prometheus.

An operator (the real runtime, with leader election, metrics and tracing)
reconciles ConfigMaps through a slow API server (a latency proxy adds 0.3 s to
every answer) under a 0.5 s deadline: objects that need two calls are
cancelled in the middle of the second one, every time, while healthy objects
that need one call succeed and requeue themselves. Debian's real
Prometheus scrapes it every second with exemplar storage on. Afterwards every
query of the cancel-storm dashboard, variables substituted, must return data,
the cancel-storm alert expression must be true, and reconcile-time exemplars
must carry trace ids.
"""

import asyncio
import json
import re
import shutil
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from tests.integration.helpers import running
from tests.polling import eventually
from wukong.dashboards.alerts import alert_rules
from wukong.dashboards.cancel_storm import HANDOFFS_PANEL, WUKONGSET_PANEL
from wukong.dashboards.render import concrete_targets, render_dashboards
from wukong.devcluster import ControlPlane
from wukong.devcluster.kubeconfig import kubeconfig_via
from wukong.devcluster.latency_proxy import LatencyProxy
from wukong.devcluster.prometheus import LocalPrometheus
from wukong.metrics import MetricsServer, RuntimeMetrics
from wukong.runtime import (
    Client,
    Controller,
    ControllerOptions,
    LeaderElectionConfig,
    Manager,
    ManagerOptions,
    ReconcileContext,
    Request,
    Result,
)
from wukong.runtime.resources import CONFIGMAPS
from wukong.tracing.spans import ReconcileTracer

CONTROLLER = "storm"
JOB = "wukong"
SCRAPE_TIMEOUT_SECONDS = 60


class SlowInfrastructure:
    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        await ctx.client.get(CONFIGMAPS, request.name, namespace=request.namespace)
        if request.name.startswith("slow"):
            # A second round trip that never fits the deadline.
            await ctx.client.get(CONFIGMAPS, request.name, namespace=request.namespace)
            return Result()
        return Result(requeue_after=0.5)


def _variables(namespace: str) -> dict[str, str]:
    return {
        "namespace": namespace,
        "job": JOB,
        "controller": CONTROLLER,
        "node": ".*",
        "pod": ".*",
        "replica": ".*",
        "__rate_interval": "10s",
        "__interval": "1s",
    }


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs Debian's prometheus")
async def test_cancel_storm_dashboard_and_alert_on_real_prometheus(
    control_plane: ControlPlane, client: Client, namespace: str, tmp_path: Path
) -> None:
    proxy = LatencyProxy(target_host="127.0.0.1", target_port=control_plane.config.apiserver_port)
    await proxy.start()
    proxy.delay = 0.3
    kubeconfig = kubeconfig_via(control_plane.kubeconfig, tmp_path / "kubeconfig", port=proxy.port)
    slow_client = await Client.from_kubeconfig(kubeconfig)
    metrics = RuntimeMetrics()
    manager = Manager(
        client=slow_client,
        # A tracer with valid ids, for the exemplars.
        observers=[metrics, ReconcileTracer(provider=TracerProvider())],
        options=ManagerOptions(
            namespace=namespace,
            leader_election=LeaderElectionConfig(
                name="storm",
                namespace=namespace,
                lease_duration=4,
                renew_deadline=3,
                retry_period=0.5,
            ),
        ),
    )
    manager.add(
        Controller(
            name=CONTROLLER,
            reconciler=SlowInfrastructure(),
            primary=CONFIGMAPS,
            options=ControllerOptions(max_concurrent_reconciles=2, reconcile_timeout=0.5),
        )
    )
    server = MetricsServer(registry=metrics.metrics.registry)
    port = await server.start("127.0.0.1:0")
    prometheus = LocalPrometheus(
        targets=[f"127.0.0.1:{port}"], job=JOB, labels={"namespace": namespace}
    )
    await asyncio.to_thread(prometheus.start)
    try:
        async with running(manager):
            for index in range(8):
                await client.create(
                    CONFIGMAPS, {"metadata": {"name": f"slow-{index}", "namespace": namespace}}
                )
            for index in range(3):
                await client.create(
                    CONFIGMAPS, {"metadata": {"name": f"tick-{index}", "namespace": namespace}}
                )
            dashboard = json.loads(render_dashboards()["wukong-cancel-storm.json"])
            targets = concrete_targets(dashboard, _variables(namespace))
            # The WukongSet panel needs sets: test_wukongset_metrics reads it with real ones;
            # the handoffs panel needs shards: test_sharded_dashboard reads it.
            elsewhere = (WUKONGSET_PANEL, HANDOFFS_PANEL)
            queries = [target.expr for target in targets if target.title not in elsewhere]
            assert len(queries) >= 10
            empty = list(queries)

            async def every_panel_has_data() -> bool:
                # rate() needs two scrapes of a counter that moved: this takes a
                # few scrape intervals, never a fixed time.
                empty[:] = [q for q in empty if not await asyncio.to_thread(prometheus.query, q)]
                return not empty

            try:
                await eventually(every_panel_has_data, timeout=SCRAPE_TIMEOUT_SECONDS, interval=1.0)
            except AssertionError as timed_out:
                raise AssertionError(
                    f"{len(empty)} panel queries returned no data: {empty}"
                ) from timed_out

            storm = next(
                rule
                for group in alert_rules()["groups"]
                for rule in group["rules"]
                if rule.get("alert") == "WukongCancelStorm"
            )

            async def storm_detected() -> bool:
                return bool(await asyncio.to_thread(prometheus.query, storm["expr"]))

            await eventually(
                storm_detected,
                timeout=SCRAPE_TIMEOUT_SECONDS,
                interval=1.0,
                what=f"the cancel-storm alert expression to hold: {storm['expr']}",
            )

            exemplars = await asyncio.to_thread(
                prometheus.exemplars,
                f'controller_runtime_reconcile_time_seconds_bucket{{controller="{CONTROLLER}"}}',
            )
            trace_ids = [
                e["labels"].get("trace_id") for series in exemplars for e in series["exemplars"]
            ]
            assert trace_ids and all(re.fullmatch(r"[0-9a-f]{32}", t or "") for t in trace_ids)
    finally:
        await server.stop()
        await asyncio.to_thread(prometheus.stop)
        await slow_client.close()
        await proxy.close()
