"""Controllers that start after the node agent, on the dev node's real pods.

A Go controller in a crash loop: each run of the pod's container cancels its
contexts in its first ~80 ms and exits, and the kubelet starts it again every
2 s or so (the dev node caps its crash-loop back-off at 1 s). The agent's
probe is on the binary, so every run is counted by the kernel from its start,
the ones that end before the agent looks at them included: once the pod is
stopped, the agent's count for it is the program's own count times its runs
(restartCount + 1), and `wukong trace --json` on the node shows each run, a pid
of its own, with exactly the program's count. A resident pod of the same image
has the binary probed before the first run (a binary seen for the first time is
probed from its exec, too late for a run this short).

A Wukong operator started after the agent (the chart's operator, scaled up once
the agent is ready) is traced from its exec: under the release's 1 ms deadline,
the agent's counts for its pod, by reason, equal the operator's own.
"""

import json
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.exposition import metric_samples
from tests.node.conftest import KUBECTL_POLL, MetricsReader, NodeCluster, create_wukong
from tests.node.test_agent_crash import _agent_pod

# The agent DaemonSet on the dev node, under a 1 ms reconcile deadline, and its helpers.
from tests.node.test_agent_on_node import (  # noqa: F401 (release: a fixture)
    OPERATOR,
    _pods,
    release,
    remove_storm,
)
from tests.polling import eventually, wait_until
from wukong.devcluster import binaries, images
from wukong.devcluster.node import NODE_NAME
from wukong.runtime import Client

PROGRAM = Path(__file__).resolve().parents[1] / "ebpf" / "programs" / "cancels"
IMAGE = "wukong.local/cancels:test"
RESTARTS = 10
# Wukongs whose every reconcile times out, and the cancellations counted at least.
STORM_WUKONGS = 3
MIN_STORM = 10
# Keeps the stopped pod readable until its final status has been read.
KEEP = "wukong.test/keep-status"
AGENT_PORT = 9464


@pytest.fixture(scope="module")
def cancels_image(node_cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """tests/ebpf/programs/cancels as an image: one static binary, /cancels."""
    binary = binaries.go_program(
        PROGRAM,
        name="node-cancels",
        progress=lambda message: print(message, file=sys.stderr),
        build_flags=["-tags=netgo,osusergo"],  # static: the image holds nothing else
    )
    spec = images.ImageSpec(
        tag=IMAGE,
        files=[images.ImageFile(path="/cancels", source=binary)],
        entrypoint=["/cancels"],
        user="65534:65534",
    )
    archive = tmp_path_factory.mktemp("images") / "cancels.tar"
    images.write_archive(spec, archive)
    node_cluster.node.import_image(archive)
    return IMAGE


def _cancels_pod(name: str, image: str, args: list[str], **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {
                    "name": "controller",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "args": args,
                    **container,
                }
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 5,
        },
    }


class Trace:
    """`wukong trace --json` on the node (the host: its processes are the node's),
    attributing to the dev node's pods: its records and notices as they come."""

    def __init__(self, cluster: NodeCluster, state_dir: Path) -> None:
        wukong = Path(sys.executable).parent / "wukong"
        self.records: list[dict[str, Any]] = []
        self.notices: list[str] = []
        self.proc = subprocess.Popen(
            [
                str(wukong),
                "trace",
                "--json",
                "--pods-only",
                f"--node-name={NODE_NAME}",
                f"--kubeconfig={cluster.plane.kubeconfig}",
                f"--state-dir={state_dir}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self._record)),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.notices.append)),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, handle: Any) -> None:
        for line in stream:
            handle(line.rstrip("\n"))

    def _record(self, line: str) -> None:
        self.records.append(json.loads(line))

    def stop(self) -> None:
        """SIGTERM: the trace reads its probes one last time, prints, and detaches."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        for reader in self._readers:
            reader.join(10)


@contextmanager
def _tracing(cluster: NodeCluster, state_dir: Path) -> Iterator[Trace]:
    trace = Trace(cluster, state_dir)
    try:
        yield trace
    finally:
        trace.stop()


def _ready_agent(cluster: NodeCluster, namespace: str) -> dict[str, Any]:
    """The release's agent pod once it is ready (`helm install --wait` does not wait
    for a DaemonSet of one pod: its maxUnavailable is 1)."""
    wait_until(
        lambda: _agent_pod(cluster, namespace) is not None,
        timeout=120,
        interval=KUBECTL_POLL,
        what="one ready agent",
    )
    agent = _agent_pod(cluster, namespace)
    assert agent is not None
    return agent


def _agent_samples(
    reader: MetricsReader, agent: dict[str, Any], name: str, namespace: str, pod: str
) -> list[tuple[dict[str, str], float]]:
    """The agent's `name` samples for one pod."""
    samples = metric_samples(reader.get(agent, AGENT_PORT), name)
    return [
        (labels, v)
        for labels, v in samples
        if (labels["namespace"], labels["pod"]) == (namespace, pod)
    ]


def _pod(cluster: NodeCluster, namespace: str, name: str) -> dict[str, Any]:
    pod: dict[str, Any] = json.loads(
        cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "json")
    )
    return pod


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    (status,) = pod["status"].get("containerStatuses") or [{}]
    return dict(status)


@dataclass(frozen=True)
class CrashLoop:
    """A crash-looping pod's runs, stopped, and what the agent and the trace saw."""

    namespace: str
    pod: str
    runs: int  # restartCount + 1, read once the pod had stopped
    per_run: int  # what each run says it cancelled
    agent: dict[str, Any]  # the agent's pod
    records: list[dict[str, Any]]  # wukong trace --json, stopped after the pod


@pytest.fixture(scope="module")
def crash_loop(
    node_cluster: NodeCluster,
    release: str,  # noqa: F811 (the fixture imported above)
    cancels_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CrashLoop]:
    namespace = f"loop-{uuid.uuid4().hex[:6]}"
    node_cluster.kubectl("create", "namespace", namespace)
    agent = _ready_agent(node_cluster, release)

    def agent_log() -> str:
        return node_cluster.kubectl("logs", "-n", release, agent["metadata"]["name"])

    with _tracing(node_cluster, tmp_path_factory.mktemp("trace-state")) as trace:
        # The binary probed by the agent and the trace before the first run starts.
        resident = _cancels_pod("resident", cancels_image, [], stdin=True)  # waits on stdin
        node_cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(resident))
        wait_until(
            lambda: "(cancels): every process that runs it" in agent_log(),
            timeout=90,
            interval=KUBECTL_POLL,
            what="the agent to probe the binary",
        )
        wait_until(
            lambda: any("(cancels): every process that runs it" in n for n in trace.notices),
            timeout=60,
            interval=KUBECTL_POLL,
            what="the trace to probe the binary",
        )
        loop = _cancels_pod("crashloop", cancels_image, ["-wait=false", "-say-count"])
        loop["metadata"]["finalizers"] = [KEEP]
        # Deleted during a run, it finishes the run (~80 ms) before its SIGTERM.
        loop["spec"]["containers"][0]["lifecycle"] = {"preStop": {"sleep": {"seconds": 1}}}
        node_cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(loop))
        try:
            final, per_run = _stop_after_restarts(node_cluster, namespace, "crashloop")
        finally:
            patch = json.dumps({"metadata": {"finalizers": None}})
            node_cluster.kubectl(
                "patch",
                "pod",
                "crashloop",
                "-n",
                namespace,
                "--type=merge",
                f"-p={patch}",
                check=False,
            )
    yield CrashLoop(
        namespace, "crashloop", final["restartCount"] + 1, per_run, agent, trace.records
    )
    node_cluster.kubectl("delete", "namespace", namespace, "--wait=false")


def _per_pid(records: list[dict[str, Any]]) -> dict[int, Counter[tuple[str, str, str]]]:
    """The trace's Go counts by pid, and by the namespace, pod and container named."""
    per_pid: dict[int, Counter[tuple[str, str, str]]] = {}
    for record in records:
        if record["runtime"] == "go":  # the runs' (no other pod here runs Go)
            where = (record["namespace"], record["pod"], record["container"])
            per_pid.setdefault(record["pid"], Counter())[where] += record["count"]
    return per_pid


def test_every_run_of_a_crash_looping_go_controller_is_counted_exactly(
    crash_loop: CrashLoop, metrics_reader: MetricsReader, node_cluster: NodeCluster
) -> None:
    """Each run a pid of its own with the program's count, none missed, none twice."""
    loop = crash_loop
    per_pid = _per_pid(loop.records)
    assert [sum(counts.values()) for counts in per_pid.values()] == [loop.per_run] * loop.runs, (
        per_pid
    )
    last: list[list[tuple[dict[str, str], float]]] = []

    def counted() -> bool:
        samples = metric_samples(
            metrics_reader.get(loop.agent, AGENT_PORT), "wukong_node_cancellations_total"
        )
        last[:] = [[(labels, v) for labels, v in samples if labels["runtime"] == "go" and v]]
        return sum(v for _, v in last[0]) == loop.per_run * loop.runs

    try:
        wait_until(counted, timeout=10, interval=KUBECTL_POLL, what="the agent's count")
    except AssertionError as failed:
        metadata = loop.agent["metadata"]
        log = node_cluster.kubectl("logs", "-n", metadata["namespace"], metadata["name"])
        raise AssertionError(
            f"{failed}: {last} for {loop.runs} runs of {loop.per_run}\n{log}"
        ) from None


def test_every_run_of_a_crash_looping_go_controller_is_its_pods(
    crash_loop: CrashLoop, metrics_reader: MetricsReader
) -> None:
    """Each run's count is the pod's container's, in the agent's series and the trace."""
    loop = crash_loop
    expected = {("controller", "go"): float(loop.per_run * loop.runs)}
    last: list[dict[tuple[str, str], float]] = []

    def counted() -> bool:
        samples = _agent_samples(
            metrics_reader, loop.agent, "wukong_node_cancellations_total", loop.namespace, loop.pod
        )
        by_container: Counter[tuple[str, str]] = Counter()
        for labels, value in samples:  # a series per reason
            by_container[(labels["container"], labels["runtime"])] += value
        last[:] = [dict(by_container)]
        return last[0] == expected

    try:
        wait_until(counted, timeout=10, interval=KUBECTL_POLL, what="the pod's count")
    except AssertionError as failed:
        raise AssertionError(f"{failed}: {last} != {expected}") from None
    run = Counter({(loop.namespace, loop.pod, "controller"): loop.per_run})
    assert list(_per_pid(loop.records).values()) == [run] * loop.runs


def _stop_after_restarts(
    cluster: NodeCluster, namespace: str, name: str
) -> tuple[dict[str, Any], int]:
    """Once the pod has restarted RESTARTS times: its container's final status after
    the pod is deleted (kept by its finalizer), and the count a run printed."""
    wait_until(
        lambda: _container(_pod(cluster, namespace, name)).get("restartCount", 0) >= RESTARTS,
        timeout=120,
        interval=KUBECTL_POLL,
        what=f"{RESTARTS} restarts",
    )
    said: list[int] = []

    def said_its_count() -> bool:
        # A run prints "ready", "done", "cancelled N"; the kubelet may be removing
        # the previous run's container as we ask (then its logs are a message).
        words = cluster.kubectl("logs", "-n", namespace, name, "--previous").split()
        said[:] = [int(words[-1])] if words[-2:-1] == ["cancelled"] else []
        return bool(said)

    wait_until(said_its_count, timeout=30, interval=KUBECTL_POLL, what="a run's own count")
    cluster.kubectl("delete", "pod", name, "-n", namespace, "--wait=false")

    def stopped() -> dict[str, Any] | None:
        # The kubelet is done with the pod once it deleted it with no grace left
        # (the finalizer keeps the object): no run can start after that.
        pod = _pod(cluster, namespace, name)
        status = _container(pod)
        done = pod["metadata"].get("deletionGracePeriodSeconds") == 0
        return status if done and "terminated" in status.get("state", {}) else None

    wait_until(lambda: stopped() is not None, timeout=60, interval=KUBECTL_POLL, what="the stop")
    final = stopped()
    assert final is not None
    # Every run finished its script: none was cut short by the deletion.
    assert final["state"]["terminated"]["exitCode"] == 0, final
    return final, said[0]


def _by_reason(samples: list[tuple[dict[str, str], float]]) -> dict[str, float]:
    """Counts by reason, the zeros (series made ahead) left out."""
    counts: Counter[str] = Counter()
    for labels, value in samples:
        counts[labels["reason"]] += value
    return {reason: value for reason, value in counts.items() if value}


async def test_an_operator_started_after_the_agent_is_counted_as_it_counts_itself(
    node_cluster: NodeCluster,
    release: str,  # noqa: F811 (the fixture imported above)
    metrics_reader: MetricsReader,
) -> None:
    agent = _ready_agent(node_cluster, release)
    storm = f"vms-{uuid.uuid4().hex[:6]}"
    node_cluster.kubectl("create", "namespace", storm)
    # The release's operators started with the agent: stopped, then one started
    # now, reconciling only the storm's namespace (a Wukong another test left
    # elsewhere would make it cancel before there is a storm to compare).
    deployment = node_cluster.kubectl(
        "get", "deployment", "-n", release, "-l", OPERATOR, "-o", "name"
    ).strip()
    node_cluster.kubectl("scale", "-n", release, deployment, "--replicas=0")
    wait_until(
        lambda: not _pods(node_cluster, release, OPERATOR),
        timeout=90,
        interval=KUBECTL_POLL,
        what="the operators gone",
    )
    args = "/spec/template/spec/containers/0/args/-"
    patch = [
        {"op": "add", "path": args, "value": f"--namespace={storm}"},
        {"op": "replace", "path": "/spec/replicas", "value": 1},
    ]
    node_cluster.kubectl(
        "patch", "-n", release, deployment, "--type=json", f"-p={json.dumps(patch)}"
    )

    def leading() -> dict[str, Any] | None:
        pods = _pods(node_cluster, release, OPERATOR)
        lease = json.loads(
            node_cluster.kubectl("get", "lease", "wukong-operator", "-n", release, "-o", "json")
        )
        holder = str(lease["spec"].get("holderIdentity") or "").rsplit("_", 1)[0]
        return pods[0] if len(pods) == 1 and pods[0]["metadata"]["name"] == holder else None

    wait_until(
        lambda: leading() is not None,
        timeout=120,
        interval=KUBECTL_POLL,
        what="the new operator to lead",
    )
    operator = leading()
    assert operator is not None
    name = operator["metadata"]["name"]

    def agent_counts() -> dict[str, float]:
        samples = _agent_samples(
            metrics_reader, agent, "wukong_node_cancellations_total", release, name
        )
        assert all(labels["container"] == "operator" for labels, _ in samples), samples
        assert all(labels["runtime"] == "python" for labels, _ in samples), samples
        return _by_reason(samples)

    def own_counts() -> dict[str, float]:
        text = metrics_reader.get(operator, 8080)
        return _by_reason(metric_samples(text, "wukong_reconcile_cancellations_total"))

    wait_until(
        lambda: (
            sum(
                v
                for _, v in _agent_samples(
                    metrics_reader, agent, "wukong_node_traced_processes", release, name
                )
            )
            >= 1
        ),
        timeout=60,
        interval=KUBECTL_POLL,
        what="the agent on the new operator",
    )
    assert own_counts() == {} and agent_counts() == {}
    async with await Client.from_kubeconfig(node_cluster.plane.kubeconfig) as client:
        for index in range(STORM_WUKONGS):
            await create_wukong(client, storm, f"vm-{index}")
    last: list[dict[str, float]] = []

    def counted_exactly() -> bool:
        # Equal at a moment the operator counted nothing new around the agent's
        # read: the retries' backoff soon leaves such moments.
        last[:] = [own_counts(), agent_counts(), own_counts()]
        before, counted, after = last
        return before == counted == after and counted.get("deadline_exceeded", 0) >= MIN_STORM

    try:
        await eventually(counted_exactly, timeout=60, interval=1.0, what="equal counts")
    except AssertionError as failed:
        raise AssertionError(f"{failed}; read (operator, agent, operator): {last}") from None
    finally:
        remove_storm(node_cluster, storm)
