"""`wukong run` as users run it: a process with metrics, health and leader election."""

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest

from tests.exposition import metric_samples
from tests.integration.helpers import metrics_reader_token, scrape
from tests.integration.webhooks import registered_webhook
from tests.integration.wukong_harness import StartWukong
from tests.polling import eventually
from wukong.demo.drill import take_lease
from wukong.devcluster import ControlPlane
from wukong.devcluster.processes import free_port
from wukong.operator.api import WUKONGS
from wukong.runtime import ApiError
from wukong.runtime.resources import LEASES


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


def _wukong_run(
    control_plane: ControlPlane,
    namespace: str,
    log: IO[str],
    metrics_port: int,
    health_port: int,
    *flags: str,
) -> "subprocess.Popen[bytes]":
    """`wukong run` for `namespace`, logging JSON lines at DEBUG to `log`."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wukong.cli",
            "--log-format=json",
            "--log-level=debug",
            "run",
            f"--kubeconfig={control_plane.kubeconfig}",
            f"--namespace={namespace}",
            f"--leader-election-namespace={namespace}",
            f"--metrics-bind=127.0.0.1:{metrics_port}",
            f"--health-bind=127.0.0.1:{health_port}",
            *flags,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def _sigterm(
    process: "subprocess.Popen[bytes]", log: IO[str]
) -> tuple[int, list[dict[str, Any]]]:
    """Stop `process` as Kubernetes does; its exit status and JSON log lines."""
    process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(process.wait, 30)
    log.seek(0)
    return code, [json.loads(line) for line in log if line.startswith("{")]


async def test_wukong_run_reconciles_serves_metrics_and_health_and_stops_cleanly(
    control_plane: ControlPlane, start_wukong: StartWukong, tmp_path: Path, kubectl: Path
) -> None:
    run = await start_wukong()  # the simulator; the in-process operator is stopped below
    await run.stop_operator()
    token = metrics_reader_token(kubectl, control_plane.kubeconfig, run.namespace)
    metrics_port, health_port, webhook_port = free_port(), free_port(), free_port()
    log = (tmp_path / "operator.log").open("w+")
    process = _wukong_run(
        control_plane,
        run.namespace,
        log,
        metrics_port,
        health_port,
        "--reconcile-timeout=5",
        f"--webhook-bind=127.0.0.1:{webhook_port}",
        f"--webhook-cert-dir={control_plane.webhook_cert_dir}",
    )
    try:
        await run.create("proc", {"disks": [{"name": "root", "size": "1Gi"}]})
        await run.wait_for(
            "proc",
            lambda obj: (obj.get("status") or {}).get("phase") == "Running",
            what="proc to be Running under `wukong run`",
        )
        status, _ = await _get(f"http://127.0.0.1:{health_port}/readyz")
        assert status == 200
        # The process serves the admission webhook on --webhook-bind: the API server
        # calls it and the Wukong naming a missing NetworkAttachmentDefinition is refused.
        async with registered_webhook(
            run.client,
            control_plane,
            url=f"https://127.0.0.1:{webhook_port}",
            namespace=run.namespace,
        ):
            with pytest.raises(ApiError) as rejected:
                await run.create("bad", {"networks": [{"name": "data", "nadName": "absent"}]})
        assert rejected.value.status == 403
        assert "spec.networks[0].nadName" in rejected.value.message
        # Secure by default: HTTPS, for a token allowed to get /metrics.
        status, text = await scrape(f"https://127.0.0.1:{metrics_port}/metrics", token)
        assert status == 200, text
        status, _ = await scrape(f"https://127.0.0.1:{metrics_port}/metrics", None)
        assert status == 401
        assert 'controller_runtime_reconcile_total{controller="wukong",result="' in text
        assert 'leader_election_master_status{name="wukong-operator"} 1.0' in text
        # At least two reviews: the marker the registration waited for and the refused
        # Wukong (on a busy machine the operator's updates of markers admitted before
        # the registration took effect are reviewed too); one refusal for the NAD.
        webhook = {"webhook": "/validate-vm-novasphere-dev-v1alpha1-wukong"}
        requests = metric_samples(text, "controller_runtime_webhook_requests_total")
        (served,) = [value for labels, value in requests if labels == {"code": "200", **webhook}]
        assert served >= 2
        # Served at 0 since the webhook was registered, as controller-runtime does.
        assert [value for labels, value in requests if labels == {"code": "500", **webhook}] == [0]
        # The webhook's certificate directory was read (controller-runtime's certwatcher).
        reads = metric_samples(text, "certwatcher_read_certificate_total")
        errors = metric_samples(text, "certwatcher_read_certificate_errors_total")
        assert len(reads) == 1 and reads[0][1] >= 1, reads
        assert [value for _, value in errors] == [0]
        decisions = metric_samples(text, "wukong_webhook_decisions_total")
        refused = {"allowed": "false", "reason": "NetworkAttachmentDefinitionNotFound", **webhook}
        assert [value for labels, value in decisions if labels == refused] == [1.0]
        lease = await run.client.get(LEASES, "wukong-operator", namespace=run.namespace)
        assert lease["spec"]["holderIdentity"]
    finally:
        code, lines = await _sigterm(process, log)
    assert code == 0, lines[-5:]
    assert not [line for line in lines if line["level"] == "ERROR"]
    assert any("Wukong operator starting" in line["message"] for line in lines)
    assert any("serving the Wukong admission webhook" in line["message"] for line in lines)

    # The Wukong outlives the operator; deleting it now waits for the next operator.
    wukong = await run.client.get(WUKONGS, "proc", namespace=run.namespace)
    assert wukong["metadata"]["finalizers"]


async def test_wukong_run_on_lease_loss_standby_stays_up_without_leading(
    control_plane: ControlPlane, start_wukong: StartWukong, tmp_path: Path
) -> None:
    run = await start_wukong()
    await run.stop_operator()
    metrics_port, health_port = free_port(), free_port()
    log = (tmp_path / "operator.log").open("w+")
    process = _wukong_run(
        control_plane,
        run.namespace,
        log,
        metrics_port,
        health_port,
        "--no-metrics-secure",
        "--on-lease-loss=standby",
    )
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"

    async def exposition_has(line: str) -> bool:
        try:
            status, text = await _get(metrics)
        except aiohttp.ClientError:
            return False
        return status == 200 and line in text.splitlines()

    try:
        leading = 'leader_election_master_status{name="wukong-operator"} 1.0'
        await eventually(lambda: exposition_has(leading), timeout=60, what="the process leading")
        await take_lease(run.client, name="wukong-operator", namespace=run.namespace, holder="x")
        standby = 'wukong_leader_standbys_total{name="wukong-operator"} 1.0'
        await eventually(lambda: exposition_has(standby), timeout=30, what="standing by")
        # Still up, not leading: metrics and health served, the process did not exit.
        assert await exposition_has('leader_election_master_status{name="wukong-operator"} 0.0')
        status, _ = await _get(f"http://127.0.0.1:{health_port}/readyz")
        assert status == 200
        assert process.poll() is None
    finally:
        code, lines = await _sigterm(process, log)
    assert code == 0, lines[-5:]
    assert not [line for line in lines if line["level"] == "ERROR"]
    assert any("standing by" in line["message"] for line in lines)


def test_wukong_run_names_what_is_missing(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("not: a kubeconfig\n")
    result = subprocess.run(
        [sys.executable, "-m", "wukong.cli", "run", f"--kubeconfig={kubeconfig}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("wukong: error: cannot configure the Kubernetes client")
    assert "Traceback" not in result.stderr
