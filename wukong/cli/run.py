"""`wukong run`: the operator's command line.

Production: it imports only what `pip install wukong-operator` installs.
"""

import argparse
import asyncio
from pathlib import Path

from wukong.cli.metricsflags import add_metrics_security
from wukong.operator.run import OperatorSettings, run_operator
from wukong.runtime import DEFAULT_RECONCILE_TIMEOUT, DEFAULT_SYNC_PERIOD, ControllerOptions


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _run(args: argparse.Namespace) -> int:
    settings = OperatorSettings(
        kubeconfig=args.kubeconfig,
        namespace=args.namespace,
        reconcile_timeout=args.reconcile_timeout,
        max_concurrent_reconciles=args.max_concurrent_reconciles,
        max_concurrent_reconciles_per_namespace=args.max_concurrent_reconciles_per_namespace,
        metrics_bind=args.metrics_bind,
        metrics_secure=args.metrics_secure,
        metrics_cert_dir=args.metrics_cert_dir,
        health_bind=args.health_bind,
        leader_elect=args.leader_elect,
        leader_election_namespace=args.leader_election_namespace,
        shutdown_grace=args.shutdown_grace,
        sync_period=args.sync_period,
        api_call_share=args.api_call_share,
        cancelled_backoff_cap=args.cancelled_backoff_cap,
        on_lease_loss=args.on_lease_loss,
        webhook_bind=args.webhook_bind,
        webhook_cert_dir=args.webhook_cert_dir,
        webhook_admit_on_error=args.webhook_admit_on_error,
        shards=args.shards,
        shard_by=args.shard_by,
    )
    return asyncio.run(run_operator(settings))


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    run = commands.add_parser(
        "run",
        help="run the Wukong operator",
        description="Run the Wukong controller: Wukong objects become Multus networks, PVCs or "
        "CDI DataVolumes and a KubeVirt VirtualMachine. Every reconcile runs under a deadline "
        "and is traced (when OTEL_EXPORTER_OTLP_ENDPOINT is set) and measured (/metrics). "
        "Exits 0 on SIGTERM/SIGINT after in-flight reconciles stop, 2 when leadership is lost, "
        "1 when it cannot start (missing CRDs or permissions, bad flags); the permissions it "
        "needs are checked at start (SelfSubjectAccessReview) and every missing one named.",
    )
    run.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="kubeconfig to use (default: the pod's service account in a cluster, else "
        "$KUBECONFIG or ~/.kube/config)",
    )
    run.add_argument(
        "--namespace",
        default=None,
        help="reconcile Wukongs in this namespace only (default: every namespace); nothing "
        "outside it is listed or watched but StorageClasses and this Namespace itself, the "
        "RBAC the chart grants with operator.watchNamespace",
    )
    run.add_argument(
        "--reconcile-timeout",
        type=_positive,
        default=DEFAULT_RECONCILE_TIMEOUT,
        metavar="SECONDS",
        help="deadline of each reconcile; a reconcile still running then is cancelled "
        f"(reason deadline_exceeded) and requeued (default: {DEFAULT_RECONCILE_TIMEOUT:g})",
    )
    run.add_argument(
        "--max-concurrent-reconciles",
        type=int,
        default=4,
        metavar="N",
        help="Wukongs reconciled at once (default: 4); namespaces with work waiting are "
        "served round-robin, so one namespace's backlog cannot starve another",
    )
    run.add_argument(
        "--max-concurrent-reconciles-per-namespace",
        type=_at_least_one,
        default=None,
        metavar="N",
        help="Wukongs of one namespace reconciled at once while other namespaces have work "
        "waiting: the next free worker goes to them first. A namespace alone with work uses "
        "every worker (default: half of --max-concurrent-reconciles, rounded up; set it equal "
        "to that for no limit)",
    )
    run.add_argument(
        "--metrics-bind-address",
        "--metrics-bind",
        dest="metrics_bind",
        default=":8080",
        metavar="ADDR",
        help="host:port of /metrics (Prometheus text, or OpenMetrics with exemplars when "
        'asked); "0" turns it off (default: :8080)',
    )
    add_metrics_security(run)
    run.add_argument(
        "--health-probe-bind-address",
        "--health-bind",
        dest="health_bind",
        default=":8081",
        metavar="ADDR",
        help='host:port of /healthz and /readyz; "0" turns them off (default: :8081)',
    )
    run.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="take a Lease so that only one replica reconciles (default: on)",
    )
    run.add_argument(
        "--leader-election-namespace",
        default=None,
        metavar="NS",
        help="namespace of the Lease (default: $POD_NAMESPACE, the service account's "
        "namespace, else default)",
    )
    run.add_argument(
        "--shutdown-grace",
        type=_positive,
        default=30.0,
        metavar="SECONDS",
        help="how long in-flight reconciles may take to stop on SIGTERM (default: 30)",
    )
    run.add_argument(
        "--sync-period",
        type=_positive,
        default=DEFAULT_SYNC_PERIOD,
        metavar="SECONDS",
        help="reconcile every Wukong at least this often, even without events, so status "
        "cannot stay stale (controller-runtime's SyncPeriod; default: 36000, 10 h)",
    )
    run.add_argument(
        "--api-call-share",
        type=_share,
        default=ControllerOptions.call_budget_share,
        metavar="FRACTION",
        help="share of the time left to its deadline that one API call may take (at least "
        "0.25 s); a call that runs out ends as api_timeout and, if idempotent, is retried "
        "while the reconcile has time; 1 lets a call use the whole deadline "
        f"(default: {ControllerOptions.call_budget_share:g})",
    )
    run.add_argument(
        "--cancelled-backoff-cap",
        type=_positive,
        default=ControllerOptions.cancelled_backoff_cap,
        metavar="SECONDS",
        help="longest backoff before a cancelled reconcile (timed out, cut by shutdown) is "
        "retried; errors keep the rate limiter's (up to 1000 s) "
        f"(default: {ControllerOptions.cancelled_backoff_cap:g})",
    )
    run.add_argument(
        "--on-lease-loss",
        choices=("exit", "standby"),
        default="exit",
        help="when another replica takes the Lease: exit (status 2, like controller-runtime; "
        "the pod restarts with an empty cache) or standby (stop all writes at once, keep the "
        "cache, /metrics and health, say so in an Event on the Lease and "
        "wukong_leader_standbys_total, and campaign again) (default: exit)",
    )
    run.add_argument(
        "--webhook-bind",
        default=":9443",
        metavar="ADDR",
        help="host:port of the validating admission webhook (HTTPS) that rejects a Wukong "
        "naming a missing NetworkAttachmentDefinition or StorageClass, or growing a disk on a "
        'class without volume expansion; "0" turns it off (default: :9443)',
    )
    run.add_argument(
        "--webhook-cert-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory with the webhook's serving certificate, tls.crt and tls.key "
        "(default: /tmp/k8s-webhook-server/serving-certs, like controller-runtime; without "
        "files there the webhook is off, with a warning); `wukong dev webhook-cert-dir` prints "
        "the local control plane's",
    )
    run.add_argument(
        "--webhook-admit-on-error",
        action="store_true",
        help="admit a Wukong the webhook could not check (a lookup failed or ran out of the "
        "review's time; it raised) with a warning, instead of answering it as errored "
        "(allowed: false, code 500: the write fails with the reason) (default: off)",
    )
    run.add_argument(
        "--shards",
        type=int,
        default=0,
        metavar="N",
        help="active-active: every replica reconciles, each its fair share of N shards "
        "(ranges of the API server's hash of the namespace), each held through a Lease "
        "wukong-operator-shard-<i>; informers list and watch only the shards held (the API "
        "server's sharded list and watch, else filtered on this side); a crashed replica's "
        "shards move within the lease duration (default: 0, one leader reconciles all)",
    )
    run.add_argument(
        "--shard-by",
        choices=("namespace",),
        default="namespace",
        help="what an object's shard is the hash of: its namespace, so a Wukong's children "
        "(same namespace) are in its shard (default: namespace)",
    )
    run.set_defaults(handler=_run)
