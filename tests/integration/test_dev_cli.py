"""`wukong dev` in a bad environment: each failure is one clear line, never a hang.

These run the real CLI in a subprocess, with their own state directory and
ports, next to (never touching) the session's control plane.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

from wukong.devcluster.pki import ensure_pki
from wukong.devcluster.processes import free_port

WUKONG = [sys.executable, "-m", "wukong.cli"]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*WUKONG, *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )


def _ports() -> list[str]:
    return [
        f"--apiserver-port={free_port()}",
        f"--etcd-port={free_port()}",
        f"--etcd-peer-port={free_port()}",
    ]


def _error_line(result: subprocess.CompletedProcess[str]) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("wukong: error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


def test_missing_go_is_reported_when_a_build_is_needed(tmp_path: Path) -> None:
    go_dir = os.path.dirname(subprocess.check_output(["which", "go"], text=True).strip())
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != go_dir)
    result = _run(
        "dev",
        "up",
        f"--state-dir={tmp_path / 'state'}",
        *_ports(),
        env={"PATH": path, "WUKONG_CACHE_DIR": str(tmp_path / "empty-cache")},
    )
    assert result.returncode == 1
    assert "Go is not on PATH" in _error_line(result)


def test_port_in_use_is_reported(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(
            "dev",
            "up",
            f"--state-dir={tmp_path}",
            f"--apiserver-port={port}",
            f"--etcd-port={free_port()}",
            f"--etcd-peer-port={free_port()}",
        )
    assert result.returncode == 1
    line = _error_line(result)
    assert f"127.0.0.1:{port}" in line and "already in use" in line


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_stale_pid_file_is_reported_and_cleared(tmp_path: Path, kubectl: Path) -> None:
    (tmp_path / "etcd.pid").write_text(f"{_dead_pid()}\n")
    status = _run("dev", "status", f"--state-dir={tmp_path}")
    assert status.returncode == 3
    assert "etcd                     stale" in status.stdout

    try:
        up = _run("dev", "up", f"--state-dir={tmp_path}", *_ports())
        assert up.returncode == 0, up.stderr
        assert "removing stale pid file" in up.stderr
        assert "installed the Wukong CRD" in up.stderr
        kubeconfig = _run("dev", "kubeconfig", f"--state-dir={tmp_path}").stdout.strip()
        served = subprocess.run(
            [str(kubectl), f"--kubeconfig={kubeconfig}", "get", "storageclass,wukongs,vm,dv", "-A"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "local-wait" in served.stdout and "(default)" in served.stdout
        # The webhook is registered by URL with Ignore: with no operator serving it, a
        # Wukong it would reject is admitted (the controller reports the problem later).
        webhook = subprocess.run(
            [
                "kubectl",
                f"--kubeconfig={kubeconfig}",
                "get",
                "validatingwebhookconfiguration",
                "wukong-dev",
                "-o",
                "jsonpath={.webhooks[0].clientConfig.url} {.webhooks[0].failurePolicy}",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert webhook.stdout == (
            "https://127.0.0.1:9443/validate-vm-novasphere-dev-v1alpha1-wukong Ignore"
        )
        cert_dir = Path(_run("dev", "webhook-cert-dir", f"--state-dir={tmp_path}").stdout.strip())
        assert sorted(p.name for p in cert_dir.iterdir()) == ["tls.crt", "tls.key"]
        admitted = subprocess.run(
            ["kubectl", f"--kubeconfig={kubeconfig}", "apply", "-f", "-"],
            input="apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\n"
            "metadata: {name: web, namespace: default}\n"
            "spec: {networks: [{name: data, nadName: absent}]}\n",
            capture_output=True,
            text=True,
        )
        assert admitted.returncode == 0, admitted.stderr
        status = _run("dev", "status", f"--state-dir={tmp_path}")
        assert status.returncode == 0, status.stdout
        assert "ready: yes" in status.stdout
    finally:
        _run("dev", "down", f"--state-dir={tmp_path}")
    assert _run("dev", "status", f"--state-dir={tmp_path}").returncode == 3


def test_crashing_apiserver_is_reported_with_its_log(tmp_path: Path) -> None:
    # A corrupt serving certificate makes the real kube-apiserver exit at start.
    pki = ensure_pki(tmp_path / "pki")
    pki.serving_cert.write_text("not a certificate\n")
    result = _run("dev", "up", f"--state-dir={tmp_path}", *_ports())
    assert result.returncode == 1
    line = _error_line(result)
    assert "kube-apiserver exited with code" in line
    assert str(tmp_path / "kube-apiserver.log") in line
    # Nothing is left running: etcd was stopped with the failed start.
    status = _run("dev", "status", f"--state-dir={tmp_path}")
    assert "etcd                     stopped" in status.stdout


def test_kubeconfig_before_up_is_a_clear_error(tmp_path: Path) -> None:
    result = _run("dev", "kubeconfig", f"--state-dir={tmp_path}")
    assert result.returncode == 1
    assert "wukong dev up" in _error_line(result)


def test_every_command_has_help() -> None:
    for args in (
        ["--help"],
        ["dev", "--help"],
        *[
            ["dev", a, "--help"]
            for a in (
                "up",
                "down",
                "status",
                "kubeconfig",
                "webhook-cert-dir",
                "simulate",
                "build",
            )
        ],
        ["run", "--help"],
        ["dashboards", "render", "--help"],
    ):
        result = _run(*args)
        assert result.returncode == 0, args
        assert "usage: wukong" in result.stdout
