"""A real, local Kubernetes control plane: etcd + kube-apiserver.

Lifecycle: `up()` generates the PKI and kubeconfig (once per state directory),
starts etcd with its data in a fresh temporary directory, starts kube-apiserver
against it, and returns once `/readyz` answers ok and the `default` namespace
exists. `down()` stops both and deletes etcd's data. Neither call ever waits
without a bound: a component that exits during start-up is reported with the
last lines of its log and the log's path.

There is no kube-controller-manager: namespaces are not finalized and owner
references are not garbage-collected, which is why the operator removes what it
created itself (see the finalizer) rather than relying on the garbage collector.
"""

import contextlib
import json
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wukong.devcluster import binaries, processes
from wukong.devcluster.binaries import Progress
from wukong.devcluster.kubeconfig import write_kubeconfig
from wukong.devcluster.pki import (
    SERVICE_CLUSTER_IP_RANGE,
    Pki,
    ensure_pki,
    ensure_webhook_certificate,
)
from wukong.devcluster.processes import Component

ETCD = "etcd"
APISERVER = "kube-apiserver"
_SETTINGS_FILE = "cluster.json"


@dataclass(frozen=True, kw_only=True)
class ControlPlaneConfig:
    """Where the control plane keeps its state and which loopback ports it uses."""

    state_dir: Path
    host: str = "127.0.0.1"
    apiserver_port: int = 6443
    etcd_port: int = 2379
    etcd_peer_port: int = 2380
    # Set by `wukong dev up --node`: the host end of the node's link, where pods
    # reach the API server (through a forwarder to `host`); it becomes the
    # address of the `kubernetes` Service's endpoint.
    node_address: str | None = None
    # kube-apiserver feature gates, e.g. ("WatchList=false",) to act like an
    # older cluster that refuses streaming lists.
    feature_gates: tuple[str, ...] = ()
    # host:port of an OTLP gRPC receiver (e.g. `jaeger.LocalJaeger.otlp_grpc`): the API
    # server then traces every request it serves, and its etcd calls, into it.
    tracing_endpoint: str | None = None
    start_timeout_seconds: float = 120.0

    @classmethod
    def for_state_dir(cls, state_dir: Path, **overrides: Any) -> "ControlPlaneConfig":
        """The config a cluster in `state_dir` was last started with, plus overrides.

        `down` and `status` need the ports `up` used without the user repeating them.
        """
        saved: dict[str, Any] = {}
        try:
            saved = json.loads((state_dir / _SETTINGS_FILE).read_text())["config"]
        except (FileNotFoundError, ValueError, KeyError):
            pass
        given = {key: value for key, value in overrides.items() if value is not None}
        return cls(state_dir=state_dir, **{**saved, **given})

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "apiserver_port": self.apiserver_port,
            "etcd_port": self.etcd_port,
            "etcd_peer_port": self.etcd_peer_port,
            "node_address": self.node_address,
            "tracing_endpoint": self.tracing_endpoint,
        }


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    state: str  # "running", "stopped" or "stale"
    pid: int | None
    log_file: Path


def component_status(component: Component) -> ComponentStatus:
    """Whether a background component runs, from its pid file."""
    pid = processes.read_pid(component)
    if pid is not None:
        state = "running"
    elif processes.stale_pid(component) is not None:
        state = "stale"
    else:
        state = "stopped"
    return ComponentStatus(component.name, state, pid, component.log_file)


@dataclass(frozen=True)
class Status:
    components: list[ComponentStatus]
    ready: bool
    version: str | None
    kubeconfig: Path | None = field(default=None)

    @property
    def running(self) -> bool:
        return all(c.state == "running" for c in self.components)


@contextlib.contextmanager
def ephemeral_control_plane(
    *,
    progress: Progress,
    state_dir: Path | None = None,
    feature_gates: tuple[str, ...] = (),
    node_address: str | None = None,
    tracing_endpoint: str | None = None,
) -> Iterator["ControlPlane"]:
    """A control plane on free loopback ports for the duration of a `with` block.

    For tests and benchmarks: it never collides with `wukong dev up`'s cluster.
    State goes to `state_dir` (kept, e.g. for logs) or to a temporary directory;
    `node_address` as in `ControlPlaneConfig` (`node.ephemeral_node_cluster`),
    `tracing_endpoint` too.
    """
    with contextlib.ExitStack() as stack:
        if state_dir is None:
            state_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wukong-")))
        plane = ControlPlane(
            ControlPlaneConfig(
                state_dir=state_dir,
                apiserver_port=processes.free_port(),
                etcd_port=processes.free_port(),
                etcd_peer_port=processes.free_port(),
                feature_gates=feature_gates,
                node_address=node_address,
                tracing_endpoint=tracing_endpoint,
            )
        )
        plane.up(progress=progress)
        try:
            yield plane
        finally:
            plane.down(progress=lambda _: None)


# Writes at Metadata level (who, what, when, the answer), once each, when the
# answer is sent; reads and watches are not logged: there are far too many.
_AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
    verbs: [create, update, patch, delete, deletecollection]
  - level: None
"""


_TRACING_CONFIG = """\
apiVersion: apiserver.config.k8s.io/v1
kind: TracingConfiguration
endpoint: {endpoint}
samplingRatePerMillion: {per_million}
"""


class ControlPlane:
    """Start, stop and inspect the local control plane described by a config."""

    def __init__(self, config: ControlPlaneConfig) -> None:
        self.config = config
        self._etcd = Component(name=ETCD, state_dir=config.state_dir)
        self._apiserver = Component(name=APISERVER, state_dir=config.state_dir)

    @property
    def kubeconfig(self) -> Path:
        return self.config.state_dir / "kubeconfig"

    @property
    def server_url(self) -> str:
        return f"https://{self.config.host}:{self.config.apiserver_port}"

    @property
    def ca_cert(self) -> Path:
        """The cluster's CA: the `caBundle` under which it trusts the webhook certificate."""
        return self.pki.ca_cert

    @property
    def webhook_cert_dir(self) -> Path:
        """tls.crt and tls.key for a webhook served on this machine (`--webhook-cert-dir`)."""
        return self.config.state_dir / "webhook-certs"

    @property
    def pki(self) -> Pki:
        """The cluster's certificates: CA, API server, admin client."""
        return Pki(self.config.state_dir / "pki")

    def get(self, path: str) -> str | None:
        """GET an API server path as the admin: the body on 200, None on any error."""
        return _get(f"{self.server_url}{path}", context=self._tls())

    @property
    def _settings_file(self) -> Path:
        return self.config.state_dir / _SETTINGS_FILE

    # -- lifecycle -------------------------------------------------------------

    def up(self, *, progress: Progress) -> None:
        """Start etcd and kube-apiserver unless they already run; wait until ready."""
        if self._healthy_running():
            progress(f"control plane already running at {self.server_url}")
            return
        self._clear_stale_pid_files(progress)
        if processes.read_pid(self._etcd) or processes.read_pid(self._apiserver):
            # Half up (one component died): start over from a clean state.
            progress("control plane is partly running; restarting it")
            self.down(progress=progress)
        cfg = self.config
        processes.ensure_port_free(cfg.host, cfg.apiserver_port, what="kube-apiserver")
        processes.ensure_port_free(cfg.host, cfg.etcd_port, what="etcd clients")
        processes.ensure_port_free(cfg.host, cfg.etcd_peer_port, what="etcd peers")

        etcd = binaries.etcd_binary(progress=progress)
        apiserver = binaries.kube_apiserver_binary(progress=progress)
        pki = ensure_pki(self.pki.directory, extra_ips=self._extra_ips())
        ensure_webhook_certificate(pki, self.webhook_cert_dir)
        write_kubeconfig(self.kubeconfig, server=self.server_url, pki=pki)

        try:
            self._start(etcd, apiserver, pki, progress)
        except BaseException:
            # Never leave half a control plane behind (e.g. etcd after the
            # apiserver crashed, or both after Ctrl-C); logs are kept.
            self.down(progress=lambda _: None)
            raise

    def _start(self, etcd: Path, apiserver: Path, pki: Pki, progress: Progress) -> None:
        cfg = self.config
        started = time.monotonic()
        data_dir = Path(tempfile.mkdtemp(prefix="wukong-etcd-"))
        self._save_settings(etcd_data_dir=data_dir)
        progress(f"starting etcd on {cfg.host}:{cfg.etcd_port} (data in {data_dir})")
        for component in (self._etcd, self._apiserver):
            component.log_file.unlink(missing_ok=True)  # each run gets a fresh log
        etcd_proc = processes.start(self._etcd, self._etcd_argv(etcd, data_dir))
        self._wait_until(self._etcd, etcd_proc, self._etcd_healthy, what="etcd to report healthy")

        progress(f"starting kube-apiserver {binaries.kubernetes_version()} on {self.server_url}")
        apiserver_proc = processes.start(self._apiserver, self._apiserver_argv(apiserver, pki))
        self._wait_until(
            self._apiserver, apiserver_proc, self._apiserver_ready, what="kube-apiserver /readyz"
        )
        self._wait_until(
            self._apiserver,
            apiserver_proc,
            self._default_namespace_exists,
            what="the default namespace",
        )
        progress(f"control plane ready in {time.monotonic() - started:.1f}s")

    def down(self, *, progress: Progress) -> None:
        """Stop kube-apiserver, then etcd, and delete etcd's data."""
        self._clear_stale_pid_files(progress)
        for component in (self._apiserver, self._etcd):
            if processes.stop(component):
                progress(f"stopped {component.name}")
        data_dir = self._etcd_data_dir()
        if data_dir is not None:
            shutil.rmtree(data_dir, ignore_errors=True)
            self._save_settings(etcd_data_dir=None)

    def restart_apiserver(self, *, progress: Progress) -> None:
        """Stop and start kube-apiserver alone (etcd and its data stay)."""
        processes.stop(self._apiserver)
        apiserver = binaries.kube_apiserver_binary(progress=progress)
        ensure_pki(self.pki.directory, extra_ips=self._extra_ips())
        proc = processes.start(self._apiserver, self._apiserver_argv(apiserver, self.pki))
        self._wait_until(
            self._apiserver, proc, self._apiserver_ready, what="kube-apiserver /readyz"
        )

    def stop_apiserver(self) -> None:
        processes.stop(self._apiserver)

    def compact_etcd(self) -> int:
        """Compact etcd's history up to its current revision; return that revision.

        Watches resuming from an older resourceVersion then get 410 Gone.
        """
        # etcd's gRPC gateway takes the same requests as JSON over HTTP.
        base = f"http://{self.config.host}:{self.config.etcd_port}/v3"
        status = _post_json(f"{base}/maintenance/status", {})
        revision = int(status["header"]["revision"])
        _post_json(f"{base}/kv/compaction", {"revision": revision, "physical": True})
        return revision

    def status(self) -> Status:
        components = [component_status(c) for c in (self._etcd, self._apiserver)]
        version = self._version() if components[-1].state == "running" else None
        ready = version is not None and self._apiserver_ready()
        kubeconfig = self.kubeconfig if self.kubeconfig.is_file() else None
        return Status(components, ready, version, kubeconfig)

    # -- command lines -----------------------------------------------------------

    def _etcd_argv(self, etcd: Path, data_dir: Path) -> list[str]:
        cfg = self.config
        client = f"http://{cfg.host}:{cfg.etcd_port}"
        peer = f"http://{cfg.host}:{cfg.etcd_peer_port}"
        return [
            str(etcd),
            "--name=wukong-dev",
            f"--data-dir={data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=wukong-dev={peer}",
            # A throwaway dev cluster: durability is not worth the fsync latency.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]

    def _extra_ips(self) -> tuple[str, ...]:
        return (self.config.node_address,) if self.config.node_address else ()

    def _apiserver_argv(self, apiserver: Path, pki: Pki) -> list[str]:
        cfg = self.config
        if cfg.node_address:
            node_args = [
                f"--advertise-address={cfg.node_address}",
                # With a controller-manager to create each namespace's `default`
                # ServiceAccount, pods get their projected token like anywhere.
                "--enable-admission-plugins=ServiceAccount",
                # `kubectl logs/exec` and the node proxy: the API server calls the
                # kubelet at the node's InternalIP with the admin certificate.
                f"--kubelet-client-certificate={pki.admin_cert}",
                f"--kubelet-client-key={pki.admin_key}",
                "--kubelet-preferred-address-types=InternalIP",
            ]
        else:
            node_args = [
                f"--advertise-address={cfg.host}",
                # No controller-manager creates the `default` ServiceAccount in new
                # namespaces, so this admission plugin would reject every pod.
                "--disable-admission-plugins=ServiceAccount",
            ]
        return [
            str(apiserver),
            f"--etcd-servers=http://{cfg.host}:{cfg.etcd_port}",
            f"--bind-address={cfg.host}",
            *node_args,
            f"--secure-port={cfg.apiserver_port}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--profiling=false",
            # Who wrote what, when: every write, with its user agent, to audit.log
            # (tests prove which replica wrote after a leader change).
            f"--audit-policy-file={self._audit_policy()}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-maxbackup=1",
            *([f"--feature-gates={','.join(cfg.feature_gates)}"] if cfg.feature_gates else []),
            *([f"--tracing-config-file={self._tracing_config()}"] if cfg.tracing_endpoint else []),
        ]

    @property
    def audit_log(self) -> Path:
        """The API server's audit log: one JSON event per write request (JSON lines)."""
        return self.config.state_dir / "audit.log"

    def _audit_policy(self) -> Path:
        path = self.config.state_dir / "audit-policy.yaml"
        path.write_text(_AUDIT_POLICY)
        return path

    def _tracing_config(self) -> Path:
        # Every request sampled: the dev cluster serves few, and a test looks for one.
        path = self.config.state_dir / "tracing-config.yaml"
        path.write_text(
            _TRACING_CONFIG.format(endpoint=self.config.tracing_endpoint, per_million=1_000_000)
        )
        return path

    # -- readiness -------------------------------------------------------------------

    def _wait_until(
        self,
        component: Component,
        proc: "subprocess.Popen[bytes]",
        check: Callable[[], bool],
        *,
        what: str,
    ) -> None:
        processes.wait_started(
            component, proc, check, what=what, timeout=self.config.start_timeout_seconds
        )

    def _healthy_running(self) -> bool:
        return (
            processes.read_pid(self._etcd) is not None
            and processes.read_pid(self._apiserver) is not None
            and self._apiserver_ready()
        )

    def _etcd_healthy(self) -> bool:
        url = f"http://{self.config.host}:{self.config.etcd_port}/health"
        body = _get(url, context=None)
        return body is not None and json.loads(body).get("health") == "true"

    def _apiserver_ready(self) -> bool:
        return self.get("/readyz") == "ok"

    def _default_namespace_exists(self) -> bool:
        return self.get("/api/v1/namespaces/default") is not None

    def _version(self) -> str | None:
        body = self.get("/version")
        if body is None:
            return None
        version: Any = json.loads(body).get("gitVersion")
        return str(version) if version else None

    def _tls(self) -> ssl.SSLContext | None:
        pki = self.pki
        if not pki.ca_cert.is_file():
            return None
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        return context

    def _clear_stale_pid_files(self, progress: Progress) -> None:
        for component in (self._etcd, self._apiserver):
            pid = processes.stale_pid(component)
            if pid is not None:
                progress(
                    f"removing stale pid file {component.pid_file} "
                    f"(pid {pid} is not a running {component.name})"
                )
                component.pid_file.unlink(missing_ok=True)

    def _save_settings(self, *, etcd_data_dir: Path | None) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        settings = {
            "config": self.config.to_json(),
            "etcd_data_dir": str(etcd_data_dir) if etcd_data_dir else None,
        }
        self._settings_file.write_text(json.dumps(settings, indent=2))

    def _etcd_data_dir(self) -> Path | None:
        try:
            value = json.loads(self._settings_file.read_text()).get("etcd_data_dir")
        except (FileNotFoundError, ValueError):
            return None
        return Path(value) if value else None


def _get(url: str, *, context: ssl.SSLContext | None) -> str | None:
    """GET a URL; the body on 200, None on any connection or HTTP error."""
    try:
        with urllib.request.urlopen(url, context=context, timeout=2) as response:
            body: bytes = response.read()
            return body.decode()
    except OSError:  # URLError, HTTPError, refused, reset, timed out
        return None


def _post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST a JSON body and return the JSON answer; errors propagate (a test helper)."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer
