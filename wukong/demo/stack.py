"""Everything the demo and the drill run, on one machine, with real parts.

A `DemoStack` sits on a running local control plane and adds: the Wukong CRD
and simulated infrastructure (`wukong dev simulate`'s controllers, in this
process), a latency proxy between the operator and the API server (delay 0
until a fault is injected), Jaeger v2 collecting the operator's spans (given,
to share it with a control plane that traces into it too, or its own),
the operator itself as a real `wukong run` process (metrics, health, leader
election, tracing through the standard OTEL_* variables), and Debian's
Prometheus scraping it with the alert rules loaded.
"""

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from wukong.dashboards.alerts import render_alert_rules
from wukong.devcluster import ControlPlane, binaries
from wukong.devcluster.apis import install_dev_apis
from wukong.devcluster.jaeger import LocalJaeger
from wukong.devcluster.kubeconfig import kubeconfig_via
from wukong.devcluster.latency_proxy import LatencyProxy
from wukong.devcluster.processes import free_port
from wukong.devcluster.prometheus import LocalPrometheus
from wukong.devcluster.simulator import SimulationConfig, simulator_manager
from wukong.diagnose.jaeger import JaegerSpan
from wukong.errors import UserError
from wukong.operator.api import WUKONGS
from wukong.operator.controller import CONTROLLER_NAME
from wukong.runtime import AlreadyExists, Client, Manager, Object

JOB = "wukong"
NAMESPACE = "default"
SERVICE = "wukong-operator"  # the operator's service.name in Jaeger
# Traces read back at most per query: a drill's storm makes a few hundred.
TRACE_LIMIT = 5000


def dashboard_variables(*, rate_interval: str) -> dict[str, str]:
    """The dashboards' variables as Grafana would set them for the demo's operator."""
    return {
        "namespace": NAMESPACE,
        "job": JOB,
        "controller": CONTROLLER_NAME,
        "__rate_interval": rate_interval,
        "__interval": "1s",
    }


class DemoError(UserError):
    """The demo cannot go on; the message names the log to read."""


@dataclass(frozen=True, kw_only=True)
class OperatorProcess:
    process: "subprocess.Popen[bytes]"
    reconcile_timeout: float
    log_file: Path


class DemoStack:
    def __init__(
        self, *, plane: ControlPlane, work_dir: Path, jaeger: LocalJaeger | None = None
    ) -> None:
        self.plane = plane
        self.work_dir = work_dir
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.proxy = LatencyProxy(target_host="127.0.0.1", target_port=plane.config.apiserver_port)
        self._owns_jaeger = jaeger is None
        self.jaeger = jaeger or LocalJaeger(binary=binaries.jaeger_binary(progress=_quiet))
        self.prometheus = LocalPrometheus(
            targets=[f"127.0.0.1:{self.metrics_port}"],
            job=JOB,
            labels={"namespace": NAMESPACE},
            rule_files=[self._alert_rules_file()],
        )
        self.client: Client | None = None
        self.operator: OperatorProcess | None = None
        self._simulator: Manager | None = None
        self._simulator_task: asyncio.Task[Any] | None = None
        self._operator_starts = 0

    @property
    def api(self) -> Client:
        assert self.client is not None, "the stack is not started"
        return self.client

    @property
    def operator_kubeconfig(self) -> Path:
        return self.work_dir / "operator.kubeconfig"

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> "DemoStack":
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.client = await Client.from_kubeconfig(self.plane.kubeconfig)
        await install_dev_apis(self.client)
        await self.proxy.start()
        kubeconfig_via(self.plane.kubeconfig, self.operator_kubeconfig, port=self.proxy.port)
        if self._owns_jaeger:
            await asyncio.to_thread(self.jaeger.start)
        self._simulator = simulator_manager(client=self.client, config=SimulationConfig())
        self._simulator_task = asyncio.create_task(self._simulator.run())
        await asyncio.to_thread(self.prometheus.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_operator()
        if self._simulator is not None and self._simulator_task is not None:
            self._simulator.stop()
            await asyncio.gather(self._simulator_task, return_exceptions=True)
        await asyncio.to_thread(self.prometheus.stop)
        if self._owns_jaeger:
            await asyncio.to_thread(self.jaeger.stop)
        await self.proxy.close()
        if self.client is not None:
            await self.client.close()

    # -- the operator process ----------------------------------------------------------

    async def start_operator(self, *, reconcile_timeout: float) -> OperatorProcess:
        """Start `wukong run` (talking through the proxy) and wait until it is ready."""
        await self.stop_operator()
        self._operator_starts += 1
        log_file = self.work_dir / f"operator-{self._operator_starts}.log"
        env = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.jaeger.otlp_http,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": SERVICE,
            # The drill reads every reconcile's trace, not a sample of the healthy ones.
            "WUKONG_TRACES_KEEP_RATIO": "1",
            "OTEL_BSP_SCHEDULE_DELAY": "500",
        }
        with log_file.open("wb") as log:
            process = subprocess.Popen(  # noqa: ASYNC220 (Popen returns at once)
                [
                    sys.executable,
                    "-m",
                    "wukong.cli",
                    "--log-format=json",
                    "--log-level=debug",
                    "run",
                    f"--kubeconfig={self.operator_kubeconfig}",
                    f"--leader-election-namespace={NAMESPACE}",
                    f"--metrics-bind=127.0.0.1:{self.metrics_port}",
                    # Loopback only, scraped by the demo's own Prometheus: plain HTTP.
                    "--no-metrics-secure",
                    f"--health-bind=127.0.0.1:{self.health_port}",
                    f"--reconcile-timeout={reconcile_timeout:g}",
                    "--shutdown-grace=5",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.operator = OperatorProcess(
            process=process, reconcile_timeout=reconcile_timeout, log_file=log_file
        )
        # Each process is scraped as its own pod, as a replaced pod would be: a
        # series per process, so a restart is not one series flapping.
        self.prometheus.set_targets(
            [f"127.0.0.1:{self.metrics_port}"],
            labels={"namespace": NAMESPACE, "pod": f"wukong-operator-{self._operator_starts}"},
        )
        await self._wait_ready(self.operator)
        return self.operator

    async def stop_operator(self) -> int | None:
        """SIGTERM the operator and wait; its exit status (None if none ran)."""
        operator, self.operator = self.operator, None
        if operator is None:
            return None
        if operator.process.poll() is None:
            operator.process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(operator.process.wait, 30)

    async def wait_operator_exit(self, *, timeout: float) -> int:
        assert self.operator is not None
        return await asyncio.to_thread(self.operator.process.wait, timeout)

    async def operator_spans(self, *, since_us: int = 0) -> list[JaegerSpan]:
        """The operator's spans stored in Jaeger that started after `since_us` (epoch µs)."""
        traces = await asyncio.to_thread(
            self.jaeger.traces, service=SERVICE, start_us=since_us or None, limit=TRACE_LIMIT
        )
        return [
            span
            for spans in traces
            for span in spans
            if span.service == SERVICE and span.start_us >= since_us
        ]

    async def reconciles_in_flight(self) -> int:
        """Reconciles the operator runs now, read from its /metrics (0 when it is down)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                text = await response.text()
        except aiohttp.ClientError:
            return 0  # not serving (yet, or any more): nothing in flight to see
        return sum(
            round(sample.value)
            for family in text_string_to_metric_families(text)
            if family.name == "controller_runtime_active_workers"
            for sample in family.samples
        )

    async def _wait_ready(self, operator: OperatorProcess, *, timeout: float = 60.0) -> None:
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with aiohttp.ClientSession() as session:
            while loop.time() < deadline:
                if operator.process.poll() is not None:
                    tail = operator.log_file.read_text(errors="replace")[-2000:]
                    raise DemoError(
                        f"the operator exited with {operator.process.returncode}: {tail}"
                    )
                try:
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise DemoError(
            f"the operator was not ready within {timeout:.0f}s; see {operator.log_file}"
        )

    # -- objects -----------------------------------------------------------------------

    async def apply(self, name: str, spec: Object) -> None:
        body = {
            "apiVersion": WUKONGS.api_version,
            "kind": WUKONGS.kind,
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": spec,
        }
        try:
            await self.api.create(WUKONGS, body)
        except AlreadyExists:
            await self.api.patch(WUKONGS, name, {"spec": spec}, namespace=NAMESPACE)

    async def phases(self) -> dict[str, str]:
        listed = await self.api.list(WUKONGS, namespace=NAMESPACE)
        return {
            item["metadata"]["name"]: (item.get("status") or {}).get("phase") or "-"
            for item in listed["items"]
        }

    def _alert_rules_file(self) -> Path:
        path = self.work_dir / "wukong-alerts.rules.yaml"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(render_alert_rules())
        return path


def _quiet(message: str) -> None:
    """Jaeger is built once, cached after; the build's own log says how it went."""
