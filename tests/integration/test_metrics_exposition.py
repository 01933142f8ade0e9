"""The /metrics endpoint of a real manager: valid, on contract, and counting cancellations.

A manager with metrics wired reconciles one ConfigMap twice against a real API
server behind a latency proxy: the first attempt hangs in a GET until its
deadline cancels it, the second succeeds. The scrape must pass the real
`promtool check metrics`, the project's contract checker, and show the
cancellation with its reason, in the classic and the OpenMetrics format.
"""

import asyncio
import re
import shutil
import urllib.request
from pathlib import Path

import pytest

from tests.contract import check_exposition
from tests.integration.helpers import running
from tests.polling import eventually
from wukong.devcluster import ControlPlane
from wukong.devcluster.kubeconfig import kubeconfig_via
from wukong.devcluster.latency_proxy import LatencyProxy
from wukong.metrics import MetricsServer, RuntimeMetrics
from wukong.runtime import (
    CancelReason,
    Client,
    Controller,
    ControllerOptions,
    Manager,
    ManagerOptions,
    ReconcileContext,
    Request,
    Result,
)
from wukong.runtime.resources import CONFIGMAPS, NAMESPACES

# Debian's package installs it as /usr/bin/promtool, which may not be on PATH.
PROMTOOL = shutil.which("promtool") or (
    "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
)
CONTROLLER = "metrics-test"


class FirstAttemptHangs:
    """The first reconcile meets a hung API server; later ones a fast one."""

    def __init__(self, proxy: LatencyProxy) -> None:
        self.proxy = proxy
        self.attempts = 0
        self.succeeded = False

    async def reconcile(self, ctx: ReconcileContext, request: Request) -> Result:
        self.attempts += 1
        self.proxy.delay = 30.0 if self.attempts == 1 else 0.0
        await ctx.client.get(CONFIGMAPS, request.name, namespace=request.namespace)
        self.succeeded = True
        return Result()


def _scrape(url: str, accept: str | None = None) -> tuple[str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Content-Type"], response.read().decode()


async def _run(*args: str, stdin: str | None = None) -> tuple[int, str]:
    # Asynchronously: the metrics server answering the tool runs on this loop.
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate(stdin.encode() if stdin is not None else None)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_metrics_exposition_of_a_running_manager(
    control_plane: ControlPlane, client: Client, namespace: str, tmp_path: Path
) -> None:
    proxy = LatencyProxy(target_host="127.0.0.1", target_port=control_plane.config.apiserver_port)
    await proxy.start()
    kubeconfig = kubeconfig_via(control_plane.kubeconfig, tmp_path / "kubeconfig", port=proxy.port)
    reconciler = FirstAttemptHangs(proxy)
    server: MetricsServer | None = None
    try:
        async with await Client.from_kubeconfig(kubeconfig) as slow_client:
            metrics = RuntimeMetrics()
            manager = Manager(
                client=slow_client, observers=[metrics], options=ManagerOptions(namespace=namespace)
            )
            manager.add(
                Controller(
                    name=CONTROLLER,
                    reconciler=reconciler,
                    primary=CONFIGMAPS,
                    # Calls may use the whole deadline: only the deadline can cut them.
                    options=ControllerOptions(reconcile_timeout=1.0, call_budget_share=1.0),
                )
            )
            server = MetricsServer(registry=metrics.metrics.registry)
            port = await server.start("127.0.0.1:0")
            url = f"http://127.0.0.1:{port}/metrics"
            async with running(manager) as run:
                await client.create(
                    CONFIGMAPS, {"metadata": {"name": "cm", "namespace": namespace}}
                )
                await eventually(
                    lambda: reconciler.succeeded,
                    timeout=30,
                    what="a successful reconcile after the cancelled one",
                )

                # One write through the manager's client, on what no controller watches.
                await manager.client.patch(
                    NAMESPACES, namespace, {"metadata": {"labels": {"scraped": "yes"}}}
                )
                content_type, text = await asyncio.to_thread(_scrape, url)
                assert content_type.startswith("text/plain; version=0.0.4")

                # (a) The real promtool accepts the classic exposition.
                if PROMTOOL is not None:
                    code, output = await _run(PROMTOOL, "check", "metrics", stdin=text)
                    assert code == 0, f"promtool check metrics failed:\n{output}"

                # (b) The exposition meets the contract (docs/contract.md).
                assert check_exposition(text) == []

                # (c) The deadline cancellation is counted with its reason, and the
                # GET it aborted is attributed to the same reason (labels print in
                # name order).
                assert (
                    f'wukong_reconcile_cancellations_total{{controller="{CONTROLLER}",'
                    f'reason="deadline_exceeded"}} 1.0'
                ) in text.splitlines()
                assert (
                    f'controller_runtime_reconcile_timeouts_total{{controller="{CONTROLLER}"}} 1.0'
                ) in text.splitlines()
                assert (
                    f'controller_runtime_reconcile_total{{controller="{CONTROLLER}",'
                    f'result="success"}} 1.0'
                ) in text.splitlines()
                assert (
                    'wukong_api_request_cancellations_total{reason="deadline_exceeded",'
                    'resource="configmaps",verb="get"} 1.0'
                ) in text.splitlines()
                assert (
                    f'workqueue_depth{{controller="{CONTROLLER}",name="{CONTROLLER}",'
                    'priority=""} 0.0'
                ) in text.splitlines()
                # client-go's labels: the HTTP method, in `method` and in `verb` alike.
                methods = set(
                    re.findall(r'^rest_client_requests_total\{[^}]*method="(\w+)"', text, re.M)
                )
                verbs = set(
                    re.findall(
                        r'^rest_client_request_duration_seconds_count\{[^}]*verb="(\w+)"',
                        text,
                        re.M,
                    )
                )
                assert methods == verbs == {"GET", "PATCH"}, (methods, verbs)

                content_type, open_metrics = await asyncio.to_thread(
                    _scrape, url, "application/openmetrics-text; version=1.0.0"
                )
                assert content_type.startswith("application/openmetrics-text")
                assert open_metrics.endswith("# EOF\n")
                assert "# TYPE wukong_reconcile_cancellations counter" in open_metrics
                assert (
                    f'wukong_reconcile_cancellations_total{{controller="{CONTROLLER}",'
                    f'reason="deadline_exceeded"}} 1.0'
                ) in open_metrics.splitlines()

            assert run.result() == CancelReason.SHUTDOWN
    finally:
        if server is not None:
            await server.stop()
        await proxy.close()

    # Everything else ran; say if the external check could not.
    if PROMTOOL is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus): (a) not run")
