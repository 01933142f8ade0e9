"""`wukong diagnose`: name the cause of a live incident from a cluster's telemetry.

It reads the operator's metrics and alerts from Prometheus (and, given
`--jaeger`, the slowest API calls' joined traces from Jaeger's query API),
applies the same rules as the drill (`wukong.diagnose.rules`) and prints the
diagnosis with its evidence. Exit status 0 healthy, 1 incident, 2 cannot tell.

It reads the cancel-storm dashboard's panels from the copy the package ships
rendered, so it needs no extra; it imports what it drives only when it runs.
"""

import argparse
import re

_DURATION = re.compile(r"(\d+)([smh])")
_SECONDS = {"s": 1, "m": 60, "h": 3600}


def window_seconds(window: str) -> int:
    """A PromQL duration of one unit ("90s", "5m", "1h") in seconds."""
    match = _DURATION.fullmatch(window)
    if match is None:
        raise argparse.ArgumentTypeError(f"{window!r}: a duration such as 90s, 5m or 1h")
    return int(match.group(1)) * _SECONDS[match.group(2)]


def _window(text: str) -> str:
    window_seconds(text)
    return text


def _diagnose(args: argparse.Namespace) -> int:
    from wukong.diagnose.jaeger import JaegerQuery
    from wukong.diagnose.live import Target, diagnose_live
    from wukong.diagnose.prometheus import CannotTell, PrometheusAPI
    from wukong.diagnose.report import CANNOT_TELL

    target = Target(namespace=args.namespace, job=args.job, controller=args.controller)
    try:
        report = diagnose_live(
            PrometheusAPI(args.prometheus),
            target,
            window=args.window,
            window_seconds=window_seconds(args.window),
            jaeger=JaegerQuery(args.jaeger) if args.jaeger else None,
            service=args.service,
        )
    except CannotTell as exc:
        print(f"cannot tell: {exc}", flush=True)
        return CANNOT_TELL
    print(report.render(), flush=True)
    return report.exit_status


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    diagnose = commands.add_parser(
        "diagnose",
        help="name the cause of a live cancel storm from Prometheus (and Jaeger)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Read the operator's metrics and alerts from a cluster's Prometheus over the
last --window and say whether it is healthy or name the dominant cause, with
its evidence: cancelled reconciles by reason, API latency and queue wait
against their healthy baselines, reconciles by namespace, the replicas whose
process started again and whether a replica's leader status dropped, the
cancel-storm dashboard's panel values and the Wukong alerts pending or firing.
Causes, first match wins:

  crash_loop          a replica's process started again and again
  rolling_restart     reconciles cancelled only for shutdown: no failure
  leader_lost         leader_lost cancellations, or a replica lost the Lease
  slow_api_server     deadline cancellations while API calls are >= 5x their
                      healthy latency (and >= 50 ms)
  noisy_tenant        one namespace ran >= 50% of the reconciles (and >= 3x the
                      next) while the queue's p99 wait was >= 5x its healthy
                      level (and >= 1 s)
  deadline_too_tight  deadline cancellations while API calls are as fast as usual
  healthy             nothing was cut short by a deadline, no tenant crowds out
                      the others

With --jaeger, the slowest API calls of the window are read from their joined
traces (the operator's span and kube-apiserver's, traced with
--tracing-config-file) and each is split into time outside the server,
in admission (webhooks) and in storage (etcd), naming the part that dominates.

Exit status: 0 healthy, 1 incident, 2 cannot tell (Prometheus unreachable,
or no operator series matching --namespace/--job).""",
    )
    diagnose.add_argument(
        "--prometheus",
        required=True,
        metavar="URL",
        help="Prometheus that scrapes the operator, e.g. http://127.0.0.1:9090 "
        "(kubectl port-forward svc/prometheus 9090)",
    )
    diagnose.add_argument(
        "--jaeger",
        metavar="URL",
        default=None,
        help="Jaeger's query API (e.g. http://127.0.0.1:16686) holding the operator's and "
        "kube-apiserver's spans: split the slowest calls by where their time went",
    )
    diagnose.add_argument(
        "--namespace",
        default=".*",
        help="regex of the operator pods' namespace target label (default: any)",
    )
    diagnose.add_argument(
        "--job", default=".*", help="regex of the operator's scrape job (default: any)"
    )
    diagnose.add_argument(
        "--controller", default=".*", help="regex of the controllers to read (default: any)"
    )
    diagnose.add_argument(
        "--window",
        type=_window,
        default="5m",
        help="how far back to look, a PromQL duration such as 90s, 5m, 1h (default: 5m)",
    )
    diagnose.add_argument(
        "--service",
        default="wukong-operator",
        help="the operator's service.name in Jaeger (default: wukong-operator)",
    )
    diagnose.set_defaults(handler=_diagnose)
