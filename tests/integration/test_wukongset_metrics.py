"""A WukongSet's desired, ready and migrating members as the operator dashboard shows them:
`wukong_wukongset_replicas` served by the set controller, scraped by a real Prometheus
and read through the dashboard's own panel query."""

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from tests.contract import check_exposition
from tests.exposition import metric_samples
from tests.integration.helpers import running
from tests.integration.test_wukongset import _migrate, _set, _status, _wait_set, set_manager
from tests.integration.wukong_harness import StartWukong, condition
from tests.polling import eventually
from wukong.dashboards.cancel_storm import UID, WUKONGSET_PANEL
from wukong.dashboards.render import concrete_targets, render_dashboards
from wukong.devcluster.prometheus import LocalPrometheus
from wukong.devcluster.simulator import SimulationConfig
from wukong.metrics import MetricsServer, RuntimeMetrics
from wukong.operator.wukongset_api import WUKONGSETS
from wukong.runtime import Client

JOB = "wukong"
FAMILY = "wukong_wukongset_replicas"


def _panel_query(namespace: str) -> str:
    dashboard = json.loads(render_dashboards()[f"{UID}.json"])
    variables = {"namespace": namespace, "job": JOB, "controller": ".*", "replica": ".*"}
    variables |= {"__rate_interval": "10s", "__interval": "1s"}
    (target,) = [t for t in concrete_targets(dashboard, variables) if t.title == WUKONGSET_PANEL]
    return target.expr


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs Debian's prometheus")
async def test_the_dashboard_shows_desired_ready_and_migrating_members(
    client: Client, namespace: str, start_wukong: StartWukong, tmp_path: Path
) -> None:
    run = await start_wukong(simulation=SimulationConfig(migration_delay=120.0))
    metrics = RuntimeMetrics()
    manager = set_manager(client, namespace, metrics, replicas=metrics.metrics.wukongsets)
    server = MetricsServer(registry=metrics.metrics.registry)
    port = await server.start("127.0.0.1:0")
    prometheus = LocalPrometheus(
        targets=[f"127.0.0.1:{port}"], job=JOB, labels={"namespace": namespace}
    )
    await asyncio.to_thread(prometheus.start)
    try:
        async with running(manager):
            await client.create(WUKONGSETS, _set(namespace, "web", 3))
            await _wait_set(
                client, namespace, "web", lambda s: _status(s, "readyReplicas") == 3, what="3"
            )
            # One member migrates for the rest of the test, and the set is asked for 0:
            # the two others go, the migrating one stays.
            await _migrate(client, namespace, "web-1")
            await run.wait_for(
                "web-1", lambda w: w["status"].get("phase") == "Migrating", what="Migrating"
            )
            await client.patch(WUKONGSETS, "web", {"spec": {"replicas": 0}}, namespace=namespace)
            blocked = await _wait_set(
                client,
                namespace,
                "web",
                lambda s: condition(s, "ScalingBlocked").get("status") == "True",
                what="ScalingBlocked",
            )
            assert _status(blocked, "replicas") == 1

            text = generate_latest(metrics.metrics.registry).decode()
            assert check_exposition(text) == []
            served = {
                labels["state"]: value
                for labels, value in metric_samples(text, FAMILY)
                if (labels["object_namespace"], labels["wukongset"]) == (namespace, "web")
            }
            assert served == {
                "desired": 0,
                "current": 1,
                "ready": 1,
                "available": 1,
                "updated": 1,
                "migrating": 1,
            }, served

            query = _panel_query(namespace)
            shown: dict[str, float] = {}

            async def panel_shows_it() -> bool:
                series = await asyncio.to_thread(prometheus.query, query)
                shown.clear()
                for one in series:
                    labels = one["metric"]
                    if (labels["object_namespace"], labels["wukongset"]) == (namespace, "web"):
                        shown[labels["state"]] = float(one["value"][1])
                return shown == {"desired": 0.0, "ready": 1.0, "migrating": 1.0}

            try:
                await eventually(panel_shows_it, timeout=60, interval=1.0, what="the panel")
            except AssertionError as error:
                raise AssertionError(f"{error}; {query} showed {shown}") from None

            # A deleted set's series go with it.
            await client.delete(WUKONGSETS, "web", namespace=namespace)

            async def series_gone() -> bool:
                text = generate_latest(metrics.metrics.registry).decode()
                return not metric_samples(text, FAMILY)

            await eventually(series_gone, timeout=60, interval=0.2, what="the set's series gone")
    finally:
        await asyncio.to_thread(prometheus.stop)
        await server.stop()
