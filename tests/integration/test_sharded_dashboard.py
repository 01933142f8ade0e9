"""The operator dashboard's row per replica, read with real sharded replicas: three
`wukong run --shards` processes, each scraped by a real Prometheus as its own pod, and
every query of the row sent as Grafana sends it for that pod. Each row shows the shards
its replica holds (its shard Leases), the rows add up to the shard count, each replica's
reconciles and queue show, and when a replica leaves, the rows of those that took its
shards show the handoff."""

import asyncio
import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO

import pytest

from tests.integration.test_shards import (
    OPERATOR_SHARDS,
    _agent_of,
    _create_wukongs,
    _shard_holders,
    _wukong_run,
    control_plane,  # noqa: F401 (the fixture: an API server with sharded list and watch)
    tenants_in_every_shard,
)
from tests.polling import eventually
from wukong.dashboards.cancel_storm import (
    HANDOFFS_PANEL,
    QUEUE_DEPTH_PANEL,
    RECONCILES_PANEL,
    REPLICA_VARIABLE,
    SHARDS_HELD_PANEL,
    SPACE_CONFLICT_PANEL,
    UID,
)
from wukong.dashboards.promql import label_values_expr, substitute_variables
from wukong.dashboards.render import concrete_targets, render_dashboards, variable_queries
from wukong.devcluster import ControlPlane
from wukong.devcluster.apis import install_dev_apis
from wukong.devcluster.processes import free_port
from wukong.devcluster.prometheus import LocalPrometheus
from wukong.devcluster.simulator import SimulationConfig, simulator_manager
from wukong.runtime import Client

JOB = "wukong-operator-metrics"
PODS = ("wukong-0", "wukong-1", "wukong-2")
TENANTS = 8
WUKONGS_PER_TENANT = 2
ROW = (SHARDS_HELD_PANEL, RECONCILES_PANEL, QUEUE_DEPTH_PANEL, HANDOFFS_PANEL, SPACE_CONFLICT_PANEL)

Replica = tuple[str, int, "subprocess.Popen[bytes]", IO[str]]  # pod, metrics port, process, log
Shown = dict[str, dict[str, float]]  # panel title -> series legend -> value


def _row_queries(namespace: str, pod: str) -> dict[str, str]:
    """The row's queries for one pod, as Grafana sends them in that pod's copy of it."""
    dashboard = json.loads(render_dashboards()[f"{UID}.json"])
    variables = {"namespace": namespace, "job": JOB, "controller": ".*", REPLICA_VARIABLE: pod}
    # A window that covers the whole test: a handoff is one step of a counter.
    variables |= {"__rate_interval": "2m", "__interval": "1s"}
    return {t.title: t.expr for t in concrete_targets(dashboard, variables) if t.title in ROW}


def _shown(prometheus: LocalPrometheus, queries: dict[str, str], legend: str) -> Shown:
    shown: Shown = {}
    for title, query in queries.items():
        for series in prometheus.query(query):
            label = series["metric"].get(legend, "") if title == HANDOFFS_PANEL else "value"
            shown.setdefault(title, {})[label] = float(series["value"][1])
    return shown


@pytest.fixture
def replicas(
    control_plane: ControlPlane,  # noqa: F811
    namespace: str,
    tmp_path: Path,
) -> Iterator[list[Replica]]:
    """Three sharded `wukong run`s, the Leases in `namespace`."""
    started: list[Replica] = []
    with ExitStack() as stack:
        for pod in PODS:
            port = free_port()
            log = stack.enter_context((tmp_path / f"{pod}.log").open("w+"))
            started.append((pod, port, _wukong_run(control_plane, namespace, log, port), log))
        try:
            yield started
        finally:
            for _, _, process, _ in started:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for _, _, process, _ in started:
                process.wait(30)


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs Debian's prometheus")
async def test_each_replicas_row_shows_its_own_shards_and_work(
    client: Client,
    namespace: str,
    replicas: list[Replica],
) -> None:
    await install_dev_apis(client)
    tenants = await tenants_in_every_shard(client, "board", TENANTS)
    # Each process a pod of its own, with the target labels the chart's pods get.
    prometheus = LocalPrometheus(
        scrape_configs=[
            {
                "job_name": JOB,
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{port}"],
                        "labels": {"namespace": namespace, "pod": pod},
                    }
                    for pod, port, _, _ in replicas
                ],
            }
        ]
    )
    simulator = simulator_manager(client=client, config=SimulationConfig())
    simulating = asyncio.create_task(simulator.run())
    await asyncio.to_thread(prometheus.start)
    try:

        async def balanced() -> bool:
            holders = await _shard_holders(client, namespace)
            per_replica = [list(holders.values()).count(h) for h in set(holders.values())]
            return len(holders) == OPERATOR_SHARDS and sorted(per_replica) == [2, 2, 2]

        await eventually(balanced, what="three replicas holding two shards each", timeout=60)
        await _create_wukongs(client, tenants, WUKONGS_PER_TENANT, "vm")
        agents = {pod: _agent_of(log) for pod, _, _, log in replicas}

        # The variable lists every replica, so Grafana repeats the row for each.
        variable = substitute_variables(
            variable_queries(json.loads(render_dashboards()[f"{UID}.json"]))[REPLICA_VARIABLE],
            {"namespace": namespace, "job": JOB},
        )

        async def every_replica_listed() -> bool:
            listed = await asyncio.to_thread(prometheus.query, label_values_expr(variable))
            return {series["metric"]["pod"] for series in listed} == set(PODS)

        await eventually(every_replica_listed, what="the replica variable", timeout=60)

        async def rows(live: tuple[str, ...]) -> dict[str, Shown]:
            return {
                pod: await asyncio.to_thread(
                    _shown, prometheus, _row_queries(namespace, pod), "reason"
                )
                for pod in live
            }

        async def held_by_lease(live: tuple[str, ...]) -> dict[str, float]:
            holders = list((await _shard_holders(client, namespace)).values())
            return {pod: float(holders.count(agents[pod])) for pod in live}

        seen: dict[str, Shown] = {}

        async def rows_show_the_split() -> bool:
            seen.update(await rows(PODS))
            held = {pod: seen[pod].get(SHARDS_HELD_PANEL, {}).get("value") for pod in PODS}
            working = all(
                seen[pod].get(RECONCILES_PANEL, {}).get("value", 0) > 0
                and "value" in seen[pod].get(QUEUE_DEPTH_PANEL, {})
                and seen[pod].get(HANDOFFS_PANEL, {}).get("acquired") is not None
                and SPACE_CONFLICT_PANEL in seen[pod]
                for pod in PODS
            )
            return held == await held_by_lease(PODS) and working

        try:
            await eventually(rows_show_the_split, what="each replica's row", timeout=90)
        except AssertionError as error:
            raise AssertionError(f"{error}; the rows showed {seen}") from None
        held = {pod: seen[pod][SHARDS_HELD_PANEL]["value"] for pod in PODS}
        assert held == dict.fromkeys(PODS, 2.0)
        assert sum(held.values()) == OPERATOR_SHARDS
        # Replicas of one shard space: none waits for another.
        conflict = {pod: seen[pod][SPACE_CONFLICT_PANEL]["value"] for pod in PODS}
        assert conflict == dict.fromkeys(PODS, 0.0)

        # The first replica leaves: its Leases are released, the two others take its
        # shards, and their rows show it.
        leaver, _, process, _ = replicas[0]
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 30)
        stayers = PODS[1:]

        async def rows_show_the_move() -> bool:
            seen.clear()
            seen.update(await rows(PODS))
            held = {pod: seen[pod].get(SHARDS_HELD_PANEL, {}).get("value") for pod in stayers}
            # Taking a shard is a step of an `acquired` counter that was already there.
            took = all(seen[pod][HANDOFFS_PANEL].get("acquired", 0) > 0 for pod in stayers)
            # A target that stops answering has its series marked stale at once.
            gone = SHARDS_HELD_PANEL not in seen[leaver]
            return held == await held_by_lease(stayers) and took and gone

        try:
            await eventually(rows_show_the_move, what="the handoff in the rows", timeout=60)
        except AssertionError as error:
            raise AssertionError(f"{error}; the rows showed {seen}") from None
        held = {pod: seen[pod][SHARDS_HELD_PANEL]["value"] for pod in stayers}
        assert held == dict.fromkeys(stayers, 3.0)
        assert sum(held.values()) == OPERATOR_SHARDS
    finally:
        await asyncio.to_thread(prometheus.stop)
        simulator.stop()
        await simulating
