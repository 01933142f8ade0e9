"""The operator process (`wukong run`): the Wukong and WukongSet controllers with everything
around it.

It wires, in this order: the API client (in-cluster, or a kubeconfig), a
preflight check that every permission it needs is granted (a
SelfSubjectAccessReview for each verb, resource and namespace of
`rbac.permissions`; all missing ones named in one line) and every API the
controller uses is served,
the manager (leader election, health endpoints, reconcile deadline), the
Wukong and WukongSet controllers, tracing (when OTEL_EXPORTER_OTLP_ENDPOINT is set) and
metrics (served on `metrics_bind`). It runs until SIGTERM/SIGINT (exit 0) or
until leadership is lost (exit 2, so the pod restarts and campaigns again, as
controller-runtime managers do).
"""

import asyncio
import logging
import os
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import aiohttp

from wukong.errors import UserError
from wukong.metrics import MetricsServer, RuntimeMetrics
from wukong.metrics.server import SecureServing
from wukong.operator.admission import add_wukong_webhook
from wukong.operator.api import WUKONGS
from wukong.operator.controller import add_wukong_controller
from wukong.operator.rbac import Permission, describe, permissions
from wukong.operator.wukongset import add_wukongset_controller
from wukong.operator.wukongset_api import WUKONGSETS
from wukong.runtime import (
    DEFAULT_RECONCILE_TIMEOUT,
    DEFAULT_SYNC_PERIOD,
    ApiError,
    ApiTimeout,
    CancelReason,
    Client,
    ControllerOptions,
    LeaderElectionConfig,
    Manager,
    ManagerOptions,
    NotFound,
    RuntimeObserver,
    ShardSpace,
)
from wukong.runtime.apis import (
    DATA_VOLUMES,
    NETWORK_ATTACHMENT_DEFINITIONS,
    VIRTUAL_MACHINE_INSTANCE_MIGRATIONS,
    VIRTUAL_MACHINE_INSTANCES,
    VIRTUAL_MACHINES,
)
from wukong.runtime.resources import PERSISTENT_VOLUME_CLAIMS, STORAGE_CLASSES, Resource
from wukong.runtime.serving import CertificateError, certificate_dir, load_serving_certificate
from wukong.tracing.sampling import TailSampling
from wukong.tracing.setup import configure_tracing
from wukong.tracing.spans import ReconcileTracer

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long `wukong run` waits for an unreachable API server before it gives up.
API_SERVER_PATIENCE = 60.0

LEASE_NAME = "wukong-operator"
_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# Where each API the controller reads comes from, for the preflight's message.
_PROVIDERS = {
    WUKONGS: "the Wukong CRD (deploy/ or `wukong dev up`)",
    WUKONGSETS: "the WukongSet CRD (deploy/ or `wukong dev up`)",
    VIRTUAL_MACHINES: "KubeVirt",
    VIRTUAL_MACHINE_INSTANCES: "KubeVirt",
    VIRTUAL_MACHINE_INSTANCE_MIGRATIONS: "KubeVirt",
    DATA_VOLUMES: "CDI (Containerized Data Importer)",
    NETWORK_ATTACHMENT_DEFINITIONS: "Multus",
    PERSISTENT_VOLUME_CLAIMS: "Kubernetes",
    STORAGE_CLASSES: "Kubernetes",
}

# Asked by any authenticated user (system:basic-user): what may I do?
SELF_SUBJECT_ACCESS_REVIEWS = Resource(
    group="authorization.k8s.io",
    version="v1",
    plural="selfsubjectaccessreviews",
    kind="SelfSubjectAccessReview",
    namespaced=False,
)


class OperatorError(UserError):
    """The operator cannot start: configuration, missing APIs, missing permissions."""


@dataclass(frozen=True, kw_only=True)
class OperatorSettings:
    kubeconfig: Path | None = None
    namespace: str | None = None  # None: every namespace
    reconcile_timeout: float = DEFAULT_RECONCILE_TIMEOUT
    max_concurrent_reconciles: int = 4
    # None: half of max_concurrent_reconciles (see per_namespace_limit).
    max_concurrent_reconciles_per_namespace: int | None = None
    metrics_bind: str = ":8080"  # "0" turns the metrics endpoint off
    # HTTPS, and only callers the API server authorizes for `get` on /metrics.
    metrics_secure: bool = True
    metrics_cert_dir: Path | None = None  # None: controller-runtime's default, else self-signed
    health_bind: str = ":8081"  # "0" turns the health endpoints off
    leader_elect: bool = True
    leader_election_namespace: str | None = None
    shutdown_grace: float = 30.0
    sync_period: float = DEFAULT_SYNC_PERIOD
    api_call_share: float = ControllerOptions.call_budget_share
    cancelled_backoff_cap: float = ControllerOptions.cancelled_backoff_cap
    on_lease_loss: Literal["exit", "standby"] = "exit"
    webhook_bind: str = ":9443"  # "0" turns the admission webhook off
    # Where tls.crt and tls.key are; None: controller-runtime's default directory,
    # and no certificate there turns the webhook off with a warning.
    webhook_cert_dir: Path | None = None
    # Admit what the webhook cannot decide (with a warning) instead of answering it
    # as errored, which fails the write (`--webhook-admit-on-error`).
    webhook_admit_on_error: bool = False
    # Active-active: split the namespaces into this many shards, held through
    # Leases (0: one leader reconciles everything); what they are keyed by.
    shards: int = 0
    shard_by: Literal["namespace"] = "namespace"

    @property
    def per_namespace_limit(self) -> int:
        """Reconciles of one namespace at once while others have work waiting: as
        set, else half the workers (rounded up), so a namespace of slow reconciles
        leaves workers for the others as soon as they have work; alone it may use
        every worker (bench/tenant_fairness.py measures what that buys)."""
        if self.max_concurrent_reconciles_per_namespace is not None:
            return self.max_concurrent_reconciles_per_namespace
        return (self.max_concurrent_reconciles + 1) // 2


# controller-runtime's default CertDir.
DEFAULT_WEBHOOK_CERT_DIR = Path(tempfile.gettempdir()) / "k8s-webhook-server" / "serving-certs"


def lease_namespace(settings: OperatorSettings) -> str:
    """Where the Lease lives: the flag, else the pod's namespace, else `default`."""
    if settings.leader_election_namespace:
        return settings.leader_election_namespace
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if _SERVICE_ACCOUNT_NAMESPACE.is_file():
        return _SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    return "default"


async def run_operator(settings: OperatorSettings) -> int:
    """Run until stopped; the exit status for the process."""
    if settings.reconcile_timeout <= 0:
        raise OperatorError("--reconcile-timeout must be positive")
    if settings.metrics_cert_dir is not None and not settings.metrics_secure:
        raise OperatorError("--metrics-cert-dir is for --metrics-secure (HTTPS) only")
    if settings.shards < 0:
        raise OperatorError(f"--shards must be 0 (off) or more, got {settings.shards}")
    if settings.shards and not settings.leader_elect:
        raise OperatorError("--shards needs leader election: the shards are held through Leases")
    election_namespace = lease_namespace(settings) if settings.leader_elect else None
    election = (
        LeaderElectionConfig(name=LEASE_NAME, namespace=election_namespace)
        if election_namespace
        else None
    )
    # Sharded replicas all write: each names itself in the API server's audit log.
    sharded = election if settings.shards else None
    client = await _client(settings, user_agent=f"wukong/{sharded.identity}" if sharded else None)
    async with client:
        watch_namespace_deletion = await _when_reachable(
            lambda: preflight(
                client,
                namespace=settings.namespace,
                lease_namespace=election_namespace,
                metrics_auth=settings.metrics_secure and settings.metrics_bind != "0",
                sharded=bool(settings.shards),
            )
        )
        webhook_tls = _webhook_tls(settings)
        metrics = RuntimeMetrics()
        provider = configure_tracing()
        observers: list[RuntimeObserver] = [metrics]
        if provider is not None:
            observers.append(
                ReconcileTracer(provider=provider, sampling=TailSampling.from_environ())
            )
        manager = Manager(
            client=client,
            observers=observers,
            options=ManagerOptions(
                namespace=settings.namespace,
                leader_election=election,
                health_bind=None if settings.health_bind == "0" else settings.health_bind,
                reconcile_timeout=settings.reconcile_timeout,
                shutdown_grace=settings.shutdown_grace,
                sync_period=settings.sync_period,
                on_lease_loss=settings.on_lease_loss,
                webhook_bind=settings.webhook_bind if webhook_tls is not None else None,
                webhook_tls=webhook_tls,
                cancel_on_namespace_deletion=watch_namespace_deletion,
                shards=ShardSpace(settings.shards, settings.shard_by) if sharded else None,
            ),
        )
        if webhook_tls is not None:
            add_wukong_webhook(manager, admit_on_error=settings.webhook_admit_on_error)
        controller_options = ControllerOptions(
            max_concurrent_reconciles=settings.max_concurrent_reconciles,
            max_concurrent_reconciles_per_namespace=settings.per_namespace_limit,
            call_budget_share=settings.api_call_share,
            cancelled_backoff_cap=settings.cancelled_backoff_cap,
        )
        add_wukong_controller(manager, options=controller_options)
        add_wukongset_controller(
            manager, options=controller_options, replicas=metrics.metrics.wukongsets
        )
        secure = (
            SecureServing(client=client, cert_dir=settings.metrics_cert_dir)
            if settings.metrics_secure
            else None
        )
        server = MetricsServer(registry=metrics.metrics.registry, secure=secure)
        if settings.metrics_bind != "0":
            port = await _listen(server, settings.metrics_bind)
            log.info(
                "serving metrics on %s (port %d, %s%s)",
                settings.metrics_bind,
                port,
                server.scheme,
                ", callers authorized by the API server" if secure else "",
            )
        manager.handle_signals()
        scope = settings.namespace or "all namespaces"
        log.info(
            "Wukong operator starting: %s, reconcile timeout %.1fs, leader election %s",
            scope,
            settings.reconcile_timeout,
            f"on (Lease {election.namespace}/{election.name})" if election else "off",
        )
        if sharded:
            log.info(
                "active-active as %s: %d shards by %s, each through a Lease %s-shard-<i>",
                sharded.identity,
                settings.shards,
                settings.shard_by,
                LEASE_NAME,
            )
        if webhook_tls is not None:
            log.info("serving the Wukong admission webhook on %s", settings.webhook_bind)
        try:
            reason = await manager.run()
        except OSError as exc:
            raise OperatorError(f"cannot serve: {exc}") from exc
        finally:
            await server.stop()
            if provider is not None:
                provider.shutdown()
    log.info("Wukong operator stopped: %s", reason)
    return 0 if reason == CancelReason.SHUTDOWN else 2


def _webhook_tls(settings: OperatorSettings) -> ssl.SSLContext | None:
    """The webhook's TLS context; None when it is off (`--webhook-bind 0`, or no
    certificate in the default directory)."""
    if settings.webhook_bind == "0":
        return None
    cert_dir = certificate_dir(settings.webhook_cert_dir, default=DEFAULT_WEBHOOK_CERT_DIR)
    if cert_dir is None:
        log.warning(
            "admission webhook off: no tls.crt and tls.key in %s (pass --webhook-cert-dir, "
            "or --webhook-bind 0 to say so); the controller still reports bad references "
            "in conditions",
            DEFAULT_WEBHOOK_CERT_DIR,
        )
        return None
    try:
        return load_serving_certificate(cert_dir)
    except CertificateError as exc:
        raise OperatorError(f"the webhook's certificate: {exc}") from exc


async def preflight(
    client: Client,
    *,
    namespace: str | None,
    lease_namespace: str | None = None,
    metrics_auth: bool = False,
    sharded: bool = False,
) -> bool:
    """Fail with one line naming what is missing, before any informer starts: every
    permission the operator needs (SelfSubjectAccessReviews of `rbac.permissions`),
    then every API it reads. True when the optional Namespace watch is permitted;
    when it is not, says so in one WARNING."""
    required, optional = permissions(
        namespace=namespace,
        lease_namespace=lease_namespace,
        metrics_auth=metrics_auth,
        sharded=sharded,
    )
    allowed = await asyncio.gather(*(_allowed(client, p) for p in required + optional))
    denied = [p for p, ok in zip(required + optional, allowed, strict=True) if not ok]
    missing = [p for p in denied if p in required]
    if missing:
        raise OperatorError(
            f"the operator's identity may not: {describe(missing)} "
            "(install the chart's RBAC, see deploy/)"
        )
    if denied:
        log.warning(
            "the operator's identity may not %s: a deleted namespace's reconciles in flight "
            "run on until their deadline instead of stopping at once",
            describe(denied),
        )
    await _served(client, namespace=namespace)
    return not denied


async def _allowed(client: Client, permission: Permission) -> bool:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": permission.resource_attributes()},
    }
    try:
        answer = await client.create(SELF_SUBJECT_ACCESS_REVIEWS, review, timeout=10)
    except ApiError as exc:
        if exc.status >= 500 or exc.status == 429:
            raise  # the server is not ready: the caller waits for it
        raise OperatorError(f"cannot check the operator's permissions: {exc.message}") from exc
    return bool((answer.get("status") or {}).get("allowed"))


async def _served(client: Client, *, namespace: str | None) -> None:
    """Every API the controller reads is served (its permissions are checked already)."""
    missing = []
    for resource, provider in _PROVIDERS.items():
        scope = namespace if resource.namespaced else None
        try:
            await client.list(resource, namespace=scope, limit=1, timeout=10)
        except NotFound:
            missing.append(f"{resource.plural}.{resource.group or 'core'} ({provider})")
        except ApiError as exc:
            if exc.status >= 500 or exc.status == 429:
                raise
            raise OperatorError(f"cannot list {resource.plural}: {exc.message}") from exc
    if missing:
        raise OperatorError(f"the API server does not serve: {', '.join(missing)}")


async def _when_reachable(check: Callable[[], Awaitable[T]]) -> T:
    """Run `check` once the API server answers: a pod starting while the server
    restarts waits for it (as client-go does), instead of crash-looping."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + API_SERVER_PATIENCE
    while True:
        try:
            return await check()
        except (aiohttp.ClientError, OSError, ApiTimeout) as exc:
            failure = f"{type(exc).__name__}: {exc}"
        except ApiError as exc:
            if exc.status < 500 and exc.status != 429:
                raise
            failure = exc.message
        if loop.time() > deadline:
            raise OperatorError(f"cannot reach the API server: {failure}")
        log.info("API server not ready (%s); retrying", failure)
        await asyncio.sleep(1.0)


async def _client(settings: OperatorSettings, *, user_agent: str | None = None) -> Client:
    try:
        return await Client.configured(settings.kubeconfig, user_agent=user_agent)
    except Exception as exc:  # kubeconfig / in-cluster loading fails in many ways
        raise OperatorError(
            f"cannot configure the Kubernetes client: {exc} "
            "(pass --kubeconfig, set KUBECONFIG, or run in a pod)"
        ) from exc


async def _listen(server: MetricsServer, bind: str) -> int:
    try:
        return await server.start(bind)
    except CertificateError as exc:
        raise OperatorError(f"the metrics certificate: {exc}") from exc
    except (OSError, ValueError) as exc:
        raise OperatorError(f"cannot serve metrics on {bind!r}: {exc}") from exc
