"""`wukong diagnose` against the chart's operator and the dev node's Prometheus.

The chart is installed on the dev node (two replicas, a 1 s reconcile
deadline, the dev Prometheus scraping them with the chart's alert rules);
`wukong dev simulate` plays the infrastructure and Wukongs reach Running. Then,
one test each, in order: nothing wrong; the node's path to the API server
slowed (its forwarder paused in bursts, SIGSTOP/SIGCONT: every pod's API call
waits); the deadline made far too tight (a `helm upgrade` to 1 ms); the
leader's Lease taken by another identity; the standby replica's process
killed again and again (a crash loop); a noisy tenant (a namespace creating
hundreds of Wukongs and changing them again and again while another changes a
few). For each, the real CLI is run against the dev Prometheus until it names
the cause (exit status 1; 0 when healthy), and the time from the fault to the
correct diagnosis and to the matching alert (pending, firing) is printed and
written to bench/.results/diagnose.json (`bench/report.py diagnose` puts it in
RESULTS.md).

Each fault lasts until its alert fires or ALERT_WAIT seconds from the fault
pass (the Lease is taken again each time a replica holds it: one loss is no
flapping). `make test` waits 60 s: the storm alert's `for` is 5 minutes, so it
reads "not within 60 s" for firing; WUKONG_DIAGNOSE_ALERT_WAIT=720 waits long
enough to time firing too (it fired 304 s after the fault, for a slow API
server and for a 1 ms deadline alike). Each test heals what it did;
the module removes its Wukongs (finalizers lifted if the deadline still cannot
let them run) and uninstalls the chart.
"""

import asyncio
import contextlib
import datetime
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.results import RESULTS_DIR, write_fragment
from tests.background import Repeating, repeated
from tests.faults import paused_in_bursts
from tests.node.conftest import NodeCluster, metrics_readers_args
from tests.node.test_agent_on_node import _host_pids, _install_dev_apis, remove_storm
from tests.node.test_chart_on_node import _helm, _pods, _ready
from wukong.devcluster.node.components import Forwarder
from wukong.devcluster.node_prometheus import MONITORING_NAMESPACE, SCRAPER
from wukong.devcluster.processes import read_pid
from wukong.devcluster.prometheus import LocalPrometheus
from wukong.diagnose.prometheus import PrometheusAPI
from wukong.diagnose.rules import (
    CRASH_LOOP,
    HEALTHY,
    LEADER_LOST,
    NOISY_TENANT,
    SLOW_API,
    TIGHT_DEADLINE,
)
from wukong.operator.api import WUKONGS
from wukong.operator.run import LEASE_NAME
from wukong.runtime import Client

CHART = Path(__file__).resolve().parents[2] / "deploy" / "chart" / "wukong"
OPERATOR = "app.kubernetes.io/component=operator"
JOB = "wukong-metrics"  # the release `wukong`'s metrics Service
# A healthy reconcile here uses a tenth of this (its p99); a slowed one needs more.
HEALTHY_TIMEOUT = 1
TIGHT_TIMEOUT = 0.001
# The forwarder, stopped this long then let run this long, again and again: every
# API call of the node's pods waits a share of a pause. At 0.4 s most reconciles
# still fit the 1 s deadline once the first ones are through (one cancelled in 120
# over 5 minutes): a slow API but no storm for the alert.
PAUSE, RUN = 1.0, 0.02
STORM_ALERT = "WukongCancelStorm"
LEADER_ALERT = "WukongLeaderFlapping"
WUKONGS_PER_FAULT = 4
# The noisy tenant's Wukongs, created together (this many requests at a time) and
# then changed again and again: a reconcile of a Running one takes milliseconds, so
# only a crowd of new ones backs the queue up.
NOISY_WUKONGS, NOISY_AT_ONCE = 300, 32
QUIET_WUKONGS = 3  # the other tenant's, changed every second meanwhile
INTRUDER = "diagnose-intruder"  # who takes the Lease
ALERT_WAIT = float(os.environ.get("WUKONG_DIAGNOSE_ALERT_WAIT", "60"))
# A new Wukong this often while the API server stays slow and the alert is awaited.
ARRIVALS_EVERY = 20
# A test lasts its fault, the alert's wait and the healing.
pytestmark = pytest.mark.timeout(600 + ALERT_WAIT, func_only=True)
# The standby replica's process killed this many times, this long after each start.
CRASHES, CRASH_EVERY = 3, 8
# How far before its fault a diagnosis window reaches (a scrape or so).
WINDOW_PAD = 4


@dataclass
class Release:
    namespace: str
    vms: str  # where the test's Wukongs are
    prometheus: LocalPrometheus
    cluster: NodeCluster
    helm: Path
    install: tuple[str, ...]
    created: int = 0

    def wukongs(self, count: int, namespace: str | None = None) -> list[str]:
        """Create `count` new Wukongs, in the test's namespace unless told another,
        `NOISY_AT_ONCE` requests at a time (each reconcile of a new one makes many API
        calls)."""
        names = [f"vm-{self.created + index + 1}" for index in range(count)]
        self.created += count
        asyncio.run(_create_wukongs(self.cluster.plane.kubeconfig, namespace or self.vms, names))
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

    def wait_settled(self) -> None:
        """Back once both replicas run and are ready, and Prometheus holds each one's
        current process start, WINDOW_PAD seconds ago: a restart the kubelet still
        had in back-off would otherwise land in the next fault's window as its own."""

        def settled() -> bool:
            pods = _pods(self.cluster, self.namespace, OPERATOR)
            if len(pods) != 2 or not all(map(_ready, pods)):
                return False
            for pod in pods:
                pid = _operator_pid(pod)
                scraped = self.prometheus.query(
                    f'process_start_time_seconds{{pod="{pod["metadata"]["name"]}", job="{JOB}"}}'
                )
                if pid is None or not scraped:
                    return False
                try:
                    started = _process_start(pid)
                except OSError:  # exited since it was found: not settled
                    return False
                # prometheus_client's figure: boot time plus the process's start ticks.
                if abs(float(scraped[0]["value"][1]) - started) > 1:
                    return False
            return True

        _until(settled, timeout=180, what=lambda: "both replicas running again and scraped")
        time.sleep(WINDOW_PAD)

    def leader(self) -> str:
        lease = json.loads(
            self.cluster.kubectl("get", "lease", LEASE_NAME, "-n", self.namespace, "-o", "json")
        )
        return str(lease["spec"].get("holderIdentity") or "")

    def wait_leader(self) -> None:
        """Back once an operator pod holds the Lease and Prometheus has scraped it
        leading: a replica that won the Lease a moment ago (a rolling upgrade's old
        leader handing it over) and lost it before any scrape leaves no trace of
        having led, so its loss could not be diagnosed."""

        def leads() -> bool:
            pods = {
                pod["metadata"]["name"] for pod in _pods(self.cluster, self.namespace, OPERATOR)
            }
            holder = self.leader().rsplit("_", 1)[0]
            return holder in pods and bool(
                self.prometheus.query(
                    f'leader_election_master_status{{namespace="{self.namespace}", pod="{holder}", '
                    f'job="{JOB}"}} == 1'
                )
            )

        _until(
            leads,
            timeout=120,
            what=lambda: f"an operator pod to lead, scraped as leading ({self.leader()})",
        )

    def diagnose(self, since: float) -> tuple[int, str]:
        """The real CLI over the window from `since` to now: (exit status, output)."""
        window = f"{math.ceil(time.time() - since) + WINDOW_PAD}s"
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

    def operator_evidence(self) -> str:
        """For a failure's message: the Lease holder, each operator pod's restarts and
        last exit, the tail of its log and of its previous container's (they go with
        the namespace once the release is uninstalled)."""
        lines = [f"Lease held by {self.leader() or '-'}"]
        for pod in _pods(self.cluster, self.namespace, OPERATOR):
            name = pod["metadata"]["name"]
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            status = next((c for c in statuses if c["name"] == "operator"), {})
            last = (status.get("lastState") or {}).get("terminated") or {}
            lines.append(
                f"pod {name}: restarts {status.get('restartCount', '?')}, last exit "
                f"{last.get('exitCode', '-')} at {last.get('finishedAt', '-')}"
            )
            for previous in ((), ("--previous",)):
                log = self.cluster.kubectl(
                    *("logs", "-n", self.namespace, name, "-c", "operator", "--tail=12"),
                    *previous,
                    check=False,
                )
                lines += [f"  {' '.join(previous) or 'log'}: {line}" for line in log.splitlines()]
        return "\n".join(lines)

    def alert_state(self, name: str) -> str | None:
        """`firing`, `pending` or None: the release's alert `name` now."""
        states = {
            alert.state
            for alert in PrometheusAPI(self.prometheus.url).alerts()
            if alert.name == name and alert.labels.get("namespace") == self.namespace
        }
        return "firing" if "firing" in states else ("pending" if states else None)


async def _create_wukongs(kubeconfig: Path, namespace: str, names: list[str]) -> None:
    limit = asyncio.Semaphore(NOISY_AT_ONCE)

    async def create(client: Client, name: str) -> None:
        body = {
            "apiVersion": WUKONGS.api_version,
            "kind": "Wukong",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {},
        }
        async with limit:
            await client.create(WUKONGS, body, namespace=namespace)

    async with await Client.from_kubeconfig(kubeconfig) as client:
        await asyncio.gather(*(create(client, name) for name in names))


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
        self._polling = Repeating(self._poll, every=2).start()

    def _poll(self) -> None:
        state = self.release.alert_state(self.name)
        elapsed = time.time() - self.started
        if state in ("pending", "firing") and self.pending is None:
            self.pending = elapsed
        if state == "firing" and self.firing is None:
            self.firing = elapsed

    def waiting(self) -> bool:
        """Not firing yet, and ALERT_WAIT seconds from the fault have not passed."""
        return self.firing is None and time.time() < self.started + ALERT_WAIT

    def wait_firing(self, within: float = math.inf) -> None:
        """Until the alert fires, ALERT_WAIT seconds from the fault have passed, or
        `within` seconds from now."""
        until = time.time() + within
        while self.waiting() and time.time() < until:
            time.sleep(2)

    def stop(self) -> list[str]:
        """Stop polling; the alert, and when it was pending and firing, as table cells
        (also printed)."""
        self._polling.stop()

        def at(seconds: float | None) -> str:
            return f"{seconds:.0f} s" if seconds is not None else f"not within {ALERT_WAIT:.0f} s"

        cells = [self.name, at(self.pending), at(self.firing)]
        print(f"{self.name} pending after {cells[1]}, firing after {cells[2]}")
        return cells


NO_ALERT = ["none of the chart's", "-", "-"]


class Measured:
    """Each fault's row: what it was, its diagnosis, how long that took, its alert.

    Written to bench/.results/diagnose.json, a fragment `bench/report.py diagnose` puts
    in RESULTS.md. A run of some of the tests (`-k`) replaces those faults' rows and
    keeps the others', each run named in the notes with its command and time.
    """

    def __init__(self, keyword: str) -> None:
        self.keyword = keyword
        self.started = time.time()
        self.rows: list[list[str]] = []

    def add(self, fault: str, cause: str, diagnosed: float | None, alert: list[str]) -> None:
        took = f"{diagnosed:.0f} s" if diagnosed is not None else "-"
        self.rows.append([fault, cause, took, *alert])

    def write(self) -> None:
        source = str(Path(__file__).relative_to(CHART.parents[2]))
        selected = f" -k '{self.keyword}'" if self.keyword else ""
        command = f"WUKONG_DIAGNOSE_ALERT_WAIT={ALERT_WAIT:.0f} pytest {source} -s{selected}"
        run = {
            "when": f"{_utc(self.started)} to {_utc(time.time())} UTC",
            "command": command,
            "faults": [row[0] for row in self.rows],
        }
        rows, runs = self.rows, [run]
        earlier_path = RESULTS_DIR / "diagnose.json"
        if earlier_path.exists():
            earlier = json.loads(earlier_path.read_text())
            now = {row[0]: row for row in self.rows}
            rows = [now.get(row[0], row) for row in earlier["rows"]]
            rows += [row for row in self.rows if row not in rows]
            runs = [*earlier.get("runs", []), run]
        # Each run named with the rows it still gives (a later run replaced the others).
        shown: list[tuple[dict[str, Any], list[str]]] = []
        for index, each in enumerate(runs):
            later = {fault for after in runs[index + 1 :] for fault in after["faults"]}
            faults = [fault for fault in each["faults"] if fault not in later]
            if faults:
                shown.append((each, faults))
        write_fragment(
            "diagnose",
            source=source,
            title="Diagnosis of live incidents on the dev node",
            header=[
                "fault",
                "diagnosis",
                "fault -> diagnosis",
                "alert",
                "pending after",
                "firing after",
            ],
            rows=rows,
            notes=[
                "The chart on the dev node (2 replicas, 1 s reconcile deadline, the dev "
                "Prometheus scraping the operator and evaluating the chart's rules every 2 s); "
                "`wukong diagnose` run every 3 s over the window since the fault until it "
                "names the cause; the alert polled every 2 s from the fault on.",
                "Each fault lasts until its alert fires or the wait ends: the forwarder stays "
                f"paused (a new Wukong every {ARRIVALS_EVERY} s meanwhile), the deadline stays "
                "at 1 ms, the Lease is taken again each time a "
                "replica holds it. The alerts' `for`: WukongCancelStorm 5m (its rates over "
                "5m), WukongLeaderFlapping 1m (more than 2 leader status changes of one pod in "
                "15m: one loss never fires it). No chart alert is about a noisy tenant or a "
                "crash loop (that is kube-state-metrics' restarts, not the operator's).",
                *(
                    f"Run {each['when']}, `{each['command']}`: "
                    + "; ".join(fault.split(" (")[0] for fault in faults)
                    + "."
                    for each, faults in shown
                ),
            ],
        )
        fragment = json.loads(earlier_path.read_text())
        kept = [each for each, _ in shown]
        earlier_path.write_text(json.dumps({**fragment, "runs": kept}, indent=2) + "\n")


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(seconds))


def _diagnosed(
    release: Release, since: float, cause: str, *, timeout: float = 240
) -> tuple[str, float]:
    """Run `wukong diagnose` over the window since the fault until it names `cause`
    (exit status 1); its output and the seconds from the fault to it (printed)."""
    deadline = time.monotonic() + timeout
    while True:
        code, output = release.diagnose(since)
        if output.startswith(f"diagnosis: {cause} ") and code == 1:
            took = time.time() - since
            print(f"{cause}: diagnosed {took:.0f} s after the fault")
            print(output)
            return output, took
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"not diagnosed as {cause} (status {code}):\n{output}\n"
                f"{release.operator_evidence()}"
            )
        time.sleep(3)


@pytest.fixture(scope="module")
def release(
    node_cluster: NodeCluster,
    chart_values: Path,
    helm: Path,
    session_node_prometheus: LocalPrometheus,
) -> Iterator[Release]:
    node_prometheus = session_node_prometheus  # for the whole module: answering now
    node_prometheus.start_again_if_gone()
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


@pytest.fixture(scope="module")
def measured(request: pytest.FixtureRequest) -> Iterator[Measured]:
    """The faults' rows, written for RESULTS.md once the module is done."""
    rows = Measured(request.config.getoption("keyword"))
    yield rows
    if rows.rows:
        rows.write()


def test_healthy(release: Release, measured: Measured) -> None:
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
    measured.add("nothing wrong", f"{HEALTHY} (exit 0)", None, ["-", "-", "-"])


def _forwarder_paused_in_bursts(cluster: NodeCluster) -> AbstractContextManager[None]:
    """The node's path to the API server, stopped and let run in turns."""
    pid = read_pid(Forwarder(cluster.plane).component)
    assert pid is not None, "the node's forwarder is not running"
    return paused_in_bursts(pid, pause=PAUSE, run=RUN)


def test_slow_api_server(release: Release, measured: Measured) -> None:
    since = time.time()
    alert = AlertWatch(release, STORM_ALERT)
    try:
        with _forwarder_paused_in_bursts(release.cluster):
            release.wukongs(WUKONGS_PER_FAULT)
            output, took = _diagnosed(release, since, SLOW_API)
            # New work keeps coming while the API stays slow (the first Wukongs get
            # through in the end, and the storm with them); firing takes its `for` (5m).
            while alert.waiting():
                release.wukongs(1)
                alert.wait_firing(within=ARRIVALS_EVERY)
    finally:
        fired = alert.stop()
    measured.add(
        f"slow path to the API server (forwarder paused {PAUSE} s, run {RUN} s, in turns)",
        SLOW_API,
        took,
        fired,
    )
    assert "hit their deadline while API calls took" in output
    release.wait_running()


def test_deadline_too_tight(release: Release, measured: Measured) -> None:
    release.upgrade(TIGHT_TIMEOUT)
    since = time.time()
    alert = AlertWatch(release, STORM_ALERT)
    try:
        release.wukongs(WUKONGS_PER_FAULT)
        output, took = _diagnosed(release, since, TIGHT_DEADLINE)
        # The storm runs on its own: firing takes the alert's `for` (5m).
        alert.wait_firing()
    finally:
        fired = alert.stop()
        release.upgrade(HEALTHY_TIMEOUT)
    measured.add(
        f"deadline too tight (`helm upgrade` to {TIGHT_TIMEOUT * 1000:.0f} ms)",
        TIGHT_DEADLINE,
        took,
        fired,
    )
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
        lease["spec"].update({"holderIdentity": INTRUDER, "renewTime": now, "acquireTime": now})
        body = json.dumps(lease)
        replaced = release.cluster.kubectl("replace", "-f", "-", stdin=body, check=False)
        if "replaced" in replaced:
            return
    raise AssertionError(f"the Lease could not be taken: {replaced}")


def _steal_again_and_again(release: Release, alert: AlertWatch) -> None:
    """The Lease taken each time a replica holds it again, until the flapping alert fires
    or ALERT_WAIT seconds from the first loss have passed."""
    while alert.waiting():
        if release.leader() not in ("", INTRUDER):
            _steal_lease(release)
        time.sleep(2)


def test_leader_loss(release: Release, measured: Measured) -> None:
    since = time.time()
    alert = AlertWatch(release, LEADER_ALERT)
    try:
        _steal_lease(release)
        release.wukongs(WUKONGS_PER_FAULT)  # reconciles in flight for the loss to cut
        output, took = _diagnosed(release, since, LEADER_LOST)
        _steal_again_and_again(release, alert)
    finally:
        fired = alert.stop()
    measured.add(
        "leader's Lease taken by another identity (again each time a replica holds it)",
        LEADER_LOST,
        took,
        fired,
    )
    assert "lost its Lease" in output
    release.wait_leader()
    release.wait_running()
    release.wait_settled()


def _process_start(pid: int) -> float:
    """When process `pid` started, as seconds since the epoch (as prometheus_client says)."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    boot = next(
        float(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime ")
    )
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def _operator_pid(pod: dict[str, Any]) -> int | None:
    """The host pid of the `wukong run` in this operator pod, None between runs."""
    uid = pod["metadata"]["uid"].replace("-", "_")
    for pid in _host_pids("/opt/wukong/bin/wukong"):
        with contextlib.suppress(OSError):
            if uid in Path(f"/proc/{pid}/cgroup").read_text().replace("-", "_"):
                return pid
    return None


def test_a_crash_looping_replica(release: Release, measured: Measured) -> None:
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
    output, took = _diagnosed(release, since, CRASH_LOOP)
    measured.add(
        f"crash loop (the standby's process killed {CRASHES} times, {CRASH_EVERY} s after "
        "each start)",
        CRASH_LOOP,
        took,
        NO_ALERT,
    )
    assert f"{standby['metadata']['name']} x" in output
    release.wait_leader()
    release.wait_settled()


@contextlib.contextmanager
def _changed_again_and_again(
    cluster: NodeCluster, namespace: str, names: list[str] | None = None, every: float = 0.0
) -> Iterator[None]:
    """The Wukongs `names` of `namespace` (all when None) annotated anew, a round every
    `every` seconds at most, while the block runs: each round is a reconcile of each."""
    ticks = itertools.count(1)

    def round_() -> None:
        cluster.kubectl(
            *("annotate", "wukongs", *(names or ["--all"]), "-n", namespace),
            *(f"test/tick={next(ticks)}", "--overwrite"),
            check=False,
        )

    with repeated(round_, every):
        yield


def test_noisy_tenant(release: Release, measured: Measured) -> None:
    # Last: its hundreds of Wukongs are still being deleted after it.
    noisy = f"noisy-{uuid.uuid4().hex[:6]}"
    release.cluster.kubectl("create", "namespace", noisy)
    # The other tenant keeps changing a few of its Wukongs: those changes wait.
    quiet = sorted(release.phases())[:QUIET_WUKONGS]
    try:
        with _changed_again_and_again(release.cluster, release.vms, quiet, every=1.0):
            since = time.time()
            release.wukongs(NOISY_WUKONGS, namespace=noisy)
            with _changed_again_and_again(release.cluster, noisy):
                output, took = _diagnosed(release, since, NOISY_TENANT)
    finally:
        remove_storm(release.cluster, noisy)
    measured.add(
        f"noisy tenant: {NOISY_WUKONGS} Wukongs made in one namespace ({NOISY_AT_ONCE} "
        f"requests at a time), then all changed again and again; {QUIET_WUKONGS} of "
        "another namespace changed every second",
        NOISY_TENANT,
        took,
        NO_ALERT,
    )
    assert f"namespace {noisy} ran " in output
    assert f"kubectl get events -n {noisy}" in output
    shares = next(line for line in output.splitlines() if "reconciles by namespace:" in line)
    assert shares.split(": ")[1].startswith(f"{noisy} "), shares
    assert release.vms in shares, shares
