"""Certificates rotated under a running `wukong run`: the webhook and /metrics serve the new
pair without a restart, a connection opened before keeps working, a bad pair changes nothing.

The operator process reads both certificate directories laid out as the
kubelet lays out a Secret volume (tls.crt -> ..data/tls.crt, ..data -> a
timestamped directory) and the test rotates them as the kubelet does, one
rename of `..data`, with certificates signed by the dev cluster's CA (the
webhook's caBundle): the API server keeps calling the webhook across the
rotation.
"""

import asyncio
import json
import shutil
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from tests.integration.helpers import metrics_reader_token
from tests.integration.test_operator_process import _get, _sigterm, _wukong_run
from tests.integration.webhooks import registered_webhook
from tests.integration.wukong_harness import StartWukong
from tests.polling import eventually
from tests.unit.test_servingcert_reload import Connection, secret_volume_update
from wukong.devcluster import ControlPlane
from wukong.devcluster.pki import ensure_webhook_certificate
from wukong.devcluster.processes import free_port
from wukong.runtime import ApiError


def _new_pair(control_plane: ControlPlane, scratch: Path) -> tuple[bytes, bytes]:
    """A new serving certificate for 127.0.0.1 signed by the dev cluster's CA."""
    shutil.rmtree(scratch, ignore_errors=True)
    ensure_webhook_certificate(control_plane.pki, scratch)
    return (scratch / "tls.crt").read_bytes(), (scratch / "tls.key").read_bytes()


async def _served_serial(port: int) -> int:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # what is served is read, not trusted
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    return x509.load_der_x509_certificate(der).serial_number


def _serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


async def test_rotated_certificates_are_served_without_a_restart(
    control_plane: ControlPlane, start_wukong: StartWukong, tmp_path: Path, kubectl: Path
) -> None:
    run = await start_wukong()  # the simulator and a namespace; the operator is the process
    await run.stop_operator()
    token = metrics_reader_token(kubectl, control_plane.kubeconfig, run.namespace)
    webhook_certs, metrics_certs = tmp_path / "webhook-certs", tmp_path / "metrics-certs"
    webhook_certs.mkdir()
    metrics_certs.mkdir()
    first = _new_pair(control_plane, tmp_path / "scratch")
    secret_volume_update(webhook_certs, first, version=1)
    secret_volume_update(metrics_certs, first, version=1)
    metrics_port, health_port, webhook_port = free_port(), free_port(), free_port()
    log = (tmp_path / "operator.log").open("w+")
    process = _wukong_run(
        control_plane,
        run.namespace,
        log,
        metrics_port,
        health_port,
        f"--webhook-bind=127.0.0.1:{webhook_port}",
        f"--webhook-cert-dir={webhook_certs}",
        f"--metrics-cert-dir={metrics_certs}",
    )
    try:

        async def ready() -> bool:
            try:
                return (await _get(f"http://127.0.0.1:{health_port}/readyz"))[0] == 200
            except OSError:
                return False

        await eventually(ready, timeout=60, what="wukong run to be ready")
        assert await _served_serial(webhook_port) == _serial(first[0])
        kept = await Connection.open(metrics_port)
        assert kept.serial == _serial(first[0])
        assert (await kept.get("/metrics", token))[0] == 200

        async with registered_webhook(
            run.client,
            control_plane,
            url=f"https://127.0.0.1:{webhook_port}",
            namespace=run.namespace,
        ):

            async def refused(name: str) -> None:
                with pytest.raises(ApiError) as rejected:
                    await run.create(name, {"networks": [{"name": "data", "nadName": "absent"}]})
                assert rejected.value.status == 403, rejected.value.message
                assert "spec.networks[0].nadName" in rejected.value.message

            await refused("before")

            # Rotation, as the kubelet updates the Secret volumes.
            second = _new_pair(control_plane, tmp_path / "scratch")
            secret_volume_update(webhook_certs, second, version=2)
            secret_volume_update(metrics_certs, second, version=2)

            async def rotated() -> bool:
                return await _served_serial(webhook_port) == _serial(second[0]) and (
                    await _served_serial(metrics_port) == _serial(second[0])
                )

            await eventually(rotated, timeout=10, what="the new certificate to be served")
            # The connection opened before the rotation still answers, on its own pair.
            assert (await kept.get("/metrics", token))[0] == 200
            assert kept.serial == _serial(first[0])
            # The API server (trusting the CA) keeps calling the webhook.
            await refused("after")

            # A bad pair (a key of another certificate): the second one keeps serving.
            third, other = (_new_pair(control_plane, tmp_path / "scratch") for _ in range(2))
            secret_volume_update(webhook_certs, (third[0], other[1]), version=3)
            await asyncio.sleep(1.5)
            for _ in range(3):
                assert await _served_serial(webhook_port) == _serial(second[0])
                await asyncio.sleep(0.5)
            await refused("bad-pair")
            # Repaired: picked up.
            secret_volume_update(webhook_certs, third, version=4)

            async def repaired() -> bool:
                return await _served_serial(webhook_port) == _serial(third[0])

            await eventually(repaired, timeout=10, what="the repaired pair to be served")
            await refused("repaired")
        kept.close()
    finally:
        code, lines = await _sigterm(process, log)
    assert code == 0, lines[-5:]
    assert not [line for line in lines if line["level"] == "ERROR"]
    warnings = [line["message"] for line in lines if line["level"] == "WARNING"]
    bad = [m for m in warnings if "still serving the previous certificate" in m]
    assert len(bad) == 1, json.dumps(warnings)
    assert str(webhook_certs) in bad[0]
    reloads = [m for m in (line["message"] for line in lines) if "serving a new certificate" in m]
    assert len(reloads) == 3, reloads  # webhook twice, metrics once
