"""The chart's agent killed with SIGKILL mid-storm, on the dev node's real pods.

Nothing of a killed agent detaches: the operators' python:audit semaphores stay
raised. The kubelet restarts the container; the new agent reads what the dead
one wrote in the node's state directory (the chart's hostPath), lowers those
semaphores before attaching, and is ready (its readinessProbe) once its first
scan attached its own probes. Each operator's semaphore is then exactly 1, the
new agent's own, and the new agent counts the cancellations of a new storm.
"""

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

from tests.ebpf.agent_helpers import usdt_semaphore
from tests.exposition import metric_samples
from tests.node.conftest import KUBECTL_POLL, MetricsReader, NodeCluster

# The agent DaemonSet on the dev node, under a 1 ms reconcile deadline, and its helpers.
from tests.node.test_agent_on_node import (  # noqa: F401 (release: a fixture)
    AGENT,
    _host_pids,
    _pods,
    _start_storm,
    release,
    remove_storm,
)
from tests.polling import eventually, wait_until
from wukong.runtime import Client


def _agent_pod(cluster: NodeCluster, namespace: str) -> dict[str, Any] | None:
    """The one agent pod, once it is ready."""
    pods = [p for p in _pods(cluster, namespace, AGENT) if p["status"].get("podIP")]
    if len(pods) != 1:
        return None
    (status,) = pods[0]["status"].get("containerStatuses") or [{}]
    return pods[0] if status.get("ready") else None


def _restarts(pod: dict[str, Any]) -> int:
    (status,) = pod["status"]["containerStatuses"]
    return int(status["restartCount"])


def _agent_pid(pod: dict[str, Any]) -> int:
    """The host pid of the `wukong agent` running in this pod."""
    uid = pod["metadata"]["uid"].replace("-", "_")
    (pid,) = [
        pid
        for pid in _host_pids("wukong agent")
        if uid in Path(f"/proc/{pid}/cgroup").read_text().replace("-", "_")
    ]
    return pid


def _counted(reader: MetricsReader, pod: dict[str, Any], namespace: str) -> float:
    """The agent's count of deadline_exceeded cancellations in the release's operators."""
    text = reader.get(pod, 9464)
    return sum(
        value
        for labels, value in metric_samples(text, "wukong_node_cancellations_total")
        if labels["namespace"] == namespace and labels["reason"] == "deadline_exceeded"
    )


async def test_a_killed_agents_semaphores_are_put_back_by_its_successor(
    node_cluster: NodeCluster,
    release: str,  # noqa: F811 (the fixture imported above)
    metrics_reader: MetricsReader,
) -> None:
    operators = _host_pids(f"--leader-election-namespace={release}")
    assert operators

    def ready_agent() -> bool:
        return _agent_pod(node_cluster, release) is not None

    await asyncio.to_thread(
        wait_until, ready_agent, timeout=180, interval=KUBECTL_POLL, what="one ready agent"
    )
    await asyncio.to_thread(
        wait_until,
        lambda: all(usdt_semaphore(pid) == 1 for pid in operators),
        timeout=60,
        interval=KUBECTL_POLL,
        what="the agent's probe on each operator",
    )
    first = _agent_pod(node_cluster, release)
    assert first is not None
    restarts = _restarts(first)

    storms: list[str] = []
    try:
        await _storm_killed_and_after(
            node_cluster, release, metrics_reader, first, restarts, operators, storms
        )
    finally:
        for storm in storms:
            remove_storm(node_cluster, storm)
    assert {pid: usdt_semaphore(pid) for pid in operators} == dict.fromkeys(operators, 1)


async def _storm_killed_and_after(
    node_cluster: NodeCluster,
    release_ns: str,
    metrics_reader: MetricsReader,
    first: dict[str, Any],
    restarts: int,
    operators: Any,
    storms: list[str],
) -> None:
    async with await Client.from_kubeconfig(node_cluster.plane.kubeconfig) as client:
        storms.append(await _start_storm(client))
        await eventually(
            lambda: _counted(metrics_reader, first, release_ns) > 0,
            timeout=120,
            interval=1.0,
            what="the first agent counting the storm",
        )

        # SIGKILL mid-storm: the agent detaches nothing.
        os.kill(_agent_pid(first), signal.SIGKILL)

        def restarted() -> dict[str, Any] | None:
            pod = _agent_pod(node_cluster, release_ns)
            return pod if pod is not None and _restarts(pod) > restarts else None

        await asyncio.to_thread(
            wait_until,
            lambda: restarted() is not None,
            timeout=180,
            interval=KUBECTL_POLL,
            what="the restarted agent ready",
        )
        second = restarted()
        assert second is not None
        # The new agent's probe, not the dead one's as well.
        assert {pid: usdt_semaphore(pid) for pid in operators} == dict.fromkeys(operators, 1)
        logs = node_cluster.kubectl("logs", "-n", release_ns, second["metadata"]["name"])
        for pid in operators:
            assert f"put back the python:audit semaphore of pid {pid} " in logs, logs

        # A new storm (a new Wukong, no backoff yet): the new agent counts it.
        storms.append(await _start_storm(client))
        await eventually(
            lambda: _counted(metrics_reader, second, release_ns) > 0,
            timeout=120,
            interval=1.0,
            what="the restarted agent counting cancellations",
        )
