"""`wukong diagnose` against the chart's operator and the dev node's Prometheus.

The chart is installed on the dev node (two replicas, a 1 s reconcile
deadline, the dev Prometheus scraping them with the chart's alert rules);
`wukong dev simulate` plays the infrastructure and Wukongs reach Running. Then,
one test each, in order: nothing wrong; the node's path to the API server
slowed (its forwarder paused in bursts, SIGSTOP/SIGCONT: every pod's API call
waits); the deadline made far too tight (a `helm upgrade` to 1 ms); the
leader's Lease taken by another identity; the standby replica's process
killed again and again (a crash loop). For each, the real CLI is run
against the dev Prometheus until it names the cause (exit status 1; 0 when
healthy), and the time from the fault to the correct diagnosis and to the
matching alert (pending, firing) is printed: `make test` waits
ALERT_WAIT seconds for the alert (60 by default: the storm alert's `for` is
5 minutes, so it reads "not within the test" for firing), and
WUKONG_DIAGNOSE_ALERT_WAIT=420 waits long enough to time firing too. Each test
heals what it did; the module removes its Wukongs (finalizers lifted if the
deadline still cannot let them run) and uninstalls the chart.
"""

import asyncio
import contextlib
import datetime
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.faults import paused_in_bursts
from tests.node.conftest import NodeCluster, metrics_readers_args
from tests.node.test_agent_on_node import _host_pids, _install_dev_apis, remove_storm
from tests.node.test_chart_on_node import _helm, _pods, _ready
from wukong.devcluster.node.components import Forwarder
from wukong.devcluster.node_prometheus import MONITORING_NAMESPACE, SCRAPER
from wukong.devcluster.processes import read_pid
from wukong.devcluster.prometheus import LocalPrometheus
from wukong.diagnose.prometheus import PrometheusAPI
from wukong.diagnose.rules import CRASH_LOOP, HEALTHY, LEADER_LOST, SLOW_API, TIGHT_DEADLINE
from wukong.operator.api import WUKONGS
from wukong.operator.run import LEASE_NAME

CHART = Path(__file__).resolve().parents[2] / "deploy" / "chart" / "wukong"
OPERATOR = "app.kubernetes.io/component=operator"
JOB = "wukong-metrics"  # the release `wukong`'s metrics Service
# A healthy reconcile here uses a tenth of this (its p99); a slowed one needs more.
HEALTHY_TIMEOUT = 1
TIGHT_TIMEOUT = 0.001
# The forwarder, stopped this long then let run this long, again and again: every
# API call of the node's pods waits a share of a pause.
PAUSE, RUN = 0.4, 0.02
STORM_ALERT = "WukongCancelStorm"
LEADER_ALERT = "WukongLeaderFlapping"
WUKONGS_PER_FAULT = 4
ALERT_WAIT = float(os.environ.get("WUKONG_DIAGNOSE_ALERT_WAIT", "60"))
# The standby replica's process killed this many times, this long after each start.
CRASHES, CRASH_EVERY = 3, 8


@dataclass
class Release:
    namespace: str
    vms: str  # where the test's Wukongs are
    prometheus: LocalPrometheus
    cluster: NodeCluster
    helm: Path
    install: tuple[str, ...]
    created: int = 0

    def wukongs(self, count: int) -> list[str]:
        """Create `count` new Wukongs (each reconcile of a new one makes many API calls)."""
        names = []
        for _ in range(count):
            self.created += 1
            name = f"vm-{self.created}"
            body = {
                "apiVersion": WUKONGS.api_version,
                "kind": "Wukong",
                "metadata": {"name": name, "namespace": self.vms},
                "spec": {},
            }
            self.cluster.kubectl("apply", "-f", "-", stdin=json.dumps(body))
            names.append(name)
        return names

    def phases(self) -> dict[str, str]:
        listed = json.loads(self.cluster.kubectl("get", "wukongs", "-n", self.vms, "-o", "json"))
        return {
            item["metadata"]["name"]: (item.get("status") or {}).get("phase", "-")
            for item in listed["items"]
        }

    def wait_running(self, timeout: float = 180) -> None:
        _until(
            lambda: set(self.phases().values()) == {"Running"},
            timeout=timeout,
            what=lambda: f"every Wukong Running: {self.phases()}",
        )

    def upgrade(self, reconcile_timeout: float) -> None:
        """`helm upgrade` to another deadline; back once both new pods are ready and
        one leads."""
        before = {pod["metadata"]["name"] for pod in _pods(self.cluster, self.namespace, OPERATOR)}
        _helm(
            self.helm,
            self.cluster,
            "upgrade",
            "wukong",
            str(CHART),
            *self.install,
            "--set-json",
            f"operator.reconcileTimeout={reconcile_timeout}",
        )

        def replaced() -> bool:
            pods = _pods(self.cluster, self.namespace, OPERATOR)
            names = {pod["metadata"]["name"] for pod in pods}
            return len(pods) == 2 and not names & before and all(map(_ready, pods))

        _until(replaced, timeout=180, what=lambda: "the operator pods replaced and ready")
        self.wait_leader()

    def leader(self) -> str:
        lease = json.loads(
            self.cluster.kubectl("get", "lease", LEASE_NAME, "-n", self.namespace, "-o", "json")
        )
        return str(lease["spec"].get("holderIdentity") or "")

    def wait_leader(self) -> None:
        def leads() -> bool:
            pods = {
                pod["metadata"]["name"] for pod in _pods(self.cluster, self.namespace, OPERATOR)
            }
            return self.leader().rsplit("_", 1)[0] in pods

        _until(leads, timeout=120, what=lambda: f"an operator pod to lead ({self.leader()})")

    def diagnose(self, since: float) -> tuple[int, str]:
        """The real CLI over the window from `since` to now: (exit status, output)."""
        window = f"{math.ceil(time.time() - since) + 4}s"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "wukong.cli",
                "diagnose",
                f"--prometheus={self.prometheus.url}",
                f"--namespace={self.namespace}",
                f"--job={JOB}",
                f"--window={window}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result.returncode, result.stdout

    def alert_state(self, name: str) -> str | None:
        """`firing`, `pending` or None: the release's alert `name` now."""
        states = {
            alert.state
            for alert in PrometheusAPI(self.prometheus.url).alerts()
            if alert.name == name and alert.labels.get("namespace") == self.namespace
        }
        return "firing" if "firing" in states else ("pending" if states else None)


def _until(check: Callable[[], bool], *, timeout: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not {what()} after {timeout:.0f}s"
        time.sleep(1)


class AlertWatch:
    """Polls an alert of the release from a fault on: when it was first pending, firing."""

    def __init__(self, release: Release, name: str) -> None:
        self.release, self.name = release, name
        self.started = time.time()
        self.pending: float | None = None
        self.firing: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            state = self.release.alert_state(self.name)
            elapsed = time.time() - self.started
            if state in ("pending", "firing") and self.pending is None:
                self.pending = elapsed
            if state == "firing" and self.firing is None:
                self.firing = elapsed
            self._stop.wait(2)

    def wait_pending(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while self.pending is None and time.time() < deadline:
            time.sleep(2)

    def wait_firing(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while self.firing is None and time.time() < deadline:
            time.sleep(2)

    def stop(self) -> str:
        self._stop.set()
        self._thread.join()

        def at(seconds: float | None) -> str:
            return f"{seconds:.0f} s" if seconds is not None else "not within the test"

        return f"{self.name} pending after {at(self.pending)}, firing after {at(self.firing)}"


def _diagnosed(release: Release, since: float, cause: str, *, timeout: float = 240) -> str:
    """Run `wukong diagnose` over the window since the fault until it names `cause`
    (exit status 1); its output, with the time it took printed."""
    deadline = time.monotonic() + timeout
    while True:
        code, output = release.diagnose(since)
        if output.startswith(f"diagnosis: {cause} ") and code == 1:
            print(f"{cause}: diagnosed {time.time() - since:.0f} s after the fault")
            print(output)
            return output
        assert time.monotonic() < deadline, f"not diagnosed as {cause} (status {code}):\n{output}"
        time.sleep(3)


@pytest.fixture(scope="module")
def release(
    node_cluster: NodeCluster, chart_values: Path, helm: Path, node_prometheus: LocalPrometheus
) -> Iterator[Release]:
    namespace = f"diagnose-{uuid.uuid4().hex[:6]}"
    vms = f"vms-{uuid.uuid4().hex[:6]}"
    install = (
        *("-n", namespace, "-f", str(chart_values), "--wait", "--timeout=180s"),
        *metrics_readers_args((MONITORING_NAMESPACE, SCRAPER)),
    )
    # KubeVirt's, CDI's, ... CRDs: the operator watches them, the simulator plays them.
    asyncio.run(_install_dev_apis(node_cluster.plane.kubeconfig))
    simulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wukong.cli",
            "dev",
            "simulate",
            f"--state-dir={node_cluster.plane.config.state_dir}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    made = Release(namespace, vms, node_prometheus, node_cluster, helm, install)
    try:
        _helm(
            helm,
            node_cluster,
            "install",
            "wukong",
            str(CHART),
            "--create-namespace",
            *install,
            "--set-json",
            f"operator.reconcileTimeout={HEALTHY_TIMEOUT}",
        )
        node_cluster.kubectl("create", "namespace", vms)
        made.wait_leader()
        made.wukongs(2)
        made.wait_running()
        scraped = f'controller_runtime_reconcile_total{{namespace="{namespace}", job="{JOB}"}}'
        _until(
            lambda: bool(node_prometheus.query(scraped)),
            timeout=60,
            what=lambda: "the operator scraped by the dev Prometheus",
        )
        yield made
    finally:
        remove_storm(node_cluster, vms)
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
        node_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        simulator.send_signal(signal.SIGTERM)
        try:
            simulator.wait(30)
        except subprocess.TimeoutExpired:
            simulator.kill()


def test_healthy(release: Release) -> None:
    since = time.time()
    # Each annotation is a reconcile, done well within the deadline.
    for tick in range(10):
        for name in release.phases():
            release.cluster.kubectl(
                "annotate", "wukong", name, "-n", release.vms, f"test/tick={tick}", "--overwrite"
            )
        time.sleep(2)
    code, output = release.diagnose(since)
    print(output)
    assert output.startswith(f"diagnosis: {HEALTHY} "), output
    assert code == 0


def _forwarder_paused_in_bursts(cluster: NodeCluster) -> AbstractContextManager[None]:
    """The node's path to the API server, stopped and let run in turns."""
    pid = read_pid(Forwarder(cluster.plane).component)
    assert pid is not None, "the node's forwarder is not running"
    return paused_in_bursts(pid, pause=PAUSE, run=RUN)


def test_slow_api_server(release: Release) -> None:
    since = time.time()
    alert = AlertWatch(release, STORM_ALERT)
    try:
        with _forwarder_paused_in_bursts(release.cluster):
            release.wukongs(WUKONGS_PER_FAULT)
            output = _diagnosed(release, since, SLOW_API)
            # Its storm alert's expression holds soon; firing takes its `for` (5m).
            alert.wait_firing(timeout=ALERT_WAIT)
    finally:
        print(alert.stop())
    assert "hit their deadline while API calls took" in output
    release.wait_running()


def test_deadline_too_tight(release: Release) -> None:
    release.upgrade(TIGHT_TIMEOUT)
    since = time.time()
    alert = AlertWatch(release, STORM_ALERT)
    try:
        release.wukongs(WUKONGS_PER_FAULT)
        output = _diagnosed(release, since, TIGHT_DEADLINE)
        # The storm runs on its own: firing takes the alert's `for` (5m).
        alert.wait_firing(timeout=ALERT_WAIT)
    finally:
        print(alert.stop())
        release.upgrade(HEALTHY_TIMEOUT)
    assert "as fast as usual" in output
    release.wait_running()


def _steal_lease(release: Release) -> None:
    """Another identity holds the operator's Lease from now (retried when the leader's
    renewal wins the race for the resourceVersion)."""
    for _ in range(10):
        lease = json.loads(
            release.cluster.kubectl(
                "get", "lease", LEASE_NAME, "-n", release.namespace, "-o", "json"
            )
        )
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lease["spec"].update(
            {"holderIdentity": "diagnose-intruder", "renewTime": now, "acquireTime": now}
        )
        body = json.dumps(lease)
        replaced = release.cluster.kubectl("replace", "-f", "-", stdin=body, check=False)
        if "replaced" in replaced:
            return
    raise AssertionError(f"the Lease could not be taken: {replaced}")


def test_leader_loss(release: Release) -> None:
    since = time.time()
    alert = AlertWatch(release, LEADER_ALERT)
    try:
        _steal_lease(release)
        release.wukongs(WUKONGS_PER_FAULT)  # reconciles in flight for the loss to cut
        output = _diagnosed(release, since, LEADER_LOST)
    finally:
        print(alert.stop())
    assert "lost its Lease" in output
    release.wait_leader()
    release.wait_running()


def _operator_pid(pod: dict[str, Any]) -> int | None:
    """The host pid of the `wukong run` in this operator pod, None between runs."""
    uid = pod["metadata"]["uid"].replace("-", "_")
    for pid in _host_pids("/opt/wukong/bin/wukong"):
        with contextlib.suppress(OSError):
            if uid in Path(f"/proc/{pid}/cgroup").read_text().replace("-", "_"):
                return pid
    return None


def test_a_crash_looping_replica(release: Release) -> None:
    # The replica that does not lead, so the Lease stays where it is: a crash loop alone.
    leader = release.leader().rsplit("_", 1)[0]
    (standby,) = [
        pod
        for pod in _pods(release.cluster, release.namespace, OPERATOR)
        if pod["metadata"]["name"] != leader
    ]
    since = time.time()
    killed: list[int] = []
    for _ in range(CRASHES):
        pid: int | None = None

        def started_again() -> bool:
            nonlocal pid
            pid = _operator_pid(standby)
            # A killed process stays in /proc until it is reaped: not the next run.
            return pid is not None and pid not in killed

        _until(started_again, timeout=60, what=lambda: "the standby's operator running again")
        time.sleep(CRASH_EVERY)  # scraped, its start time with it
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
    output = _diagnosed(release, since, CRASH_LOOP)
    assert f"{standby['metadata']['name']} x" in output
    release.wait_leader()
