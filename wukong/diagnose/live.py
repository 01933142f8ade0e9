"""The signals of a live cluster, read from its Prometheus (and Jaeger).

Every query is an instant query over one window ending now (`--window`): the
cancellations it counted by reason, the API latency and the work queue's wait
in it against a healthy baseline before it, the reconciles by the reconciled
object's namespace (the top namespaces the operator exports), how often each
replica's process started and whether a replica's leader status dropped. No
operator series at all means the selector (or the Prometheus) is wrong:
`CannotTell`, never "healthy".
"""

import re
import time
from dataclasses import dataclass

from wukong.diagnose.jaeger import JaegerQuery
from wukong.diagnose.panels import EVIDENCE_PANELS, PanelReading, panel_readings
from wukong.diagnose.prometheus import Alert, CannotTell, PrometheusAPI
from wukong.diagnose.report import Report
from wukong.diagnose.rules import Signals, diagnose
from wukong.diagnose.split import slowest_calls

API_LATENCY = "rest_client_request_duration_seconds_bucket"
QUEUE_WAIT = "workqueue_queue_duration_seconds_bucket"
NAMESPACE_RECONCILES = "wukong_top_namespace_reconciles_total"
# The baseline is a low quantile of the API's per-minute median over this long
# before the window: a healthy level even when earlier incidents are in it.
BASELINE_RANGE = "1h"
BASELINE_QUANTILE = 0.1


@dataclass(frozen=True, kw_only=True)
class Target:
    """Which operator to diagnose: its pods' Prometheus target labels, as regexes."""

    namespace: str = ".*"
    job: str = ".*"
    controller: str = ".*"

    @property
    def selector(self) -> str:
        return f'namespace=~"{self.namespace}", job=~"{self.job}"'

    def dashboard_variables(self, *, window: str) -> dict[str, str]:
        return {
            "namespace": self.namespace,
            "job": self.job,
            "controller": self.controller,
            "__rate_interval": window,
            "__interval": "15s",
        }


def read_signals(prometheus: PrometheusAPI, target: Target, *, window: str) -> Signals:
    """The rules' signals over the last `window` (a PromQL duration, e.g. "5m")."""
    sel = target.selector
    if not prometheus.query(f"controller_runtime_reconcile_total{{{sel}}}"):
        raise CannotTell(
            f"no operator series (controller_runtime_reconcile_total{{{sel}}}) in "
            f"Prometheus at {prometheus.url}: is it scraping the operator, and do "
            "--namespace/--job match its target labels?"
        )
    controllers = f'{sel}, controller=~"{target.controller}"'
    cancellations = {
        item["metric"].get("reason", "?"): round(float(item["value"][1]))
        for item in prometheus.query(
            f"sum by (reason) (increase(wukong_reconcile_cancellations_total{{{controllers}}}"
            f"[{window}]))"
        )
    }
    by_namespace = {
        item["metric"].get("object_namespace", "?"): round(float(item["value"][1]))
        for item in prometheus.query(
            f"sum by (object_namespace) (increase({NAMESPACE_RECONCILES}{{{controllers}}}"
            f"[{window}]))"
        )
    }
    queue = f"{QUEUE_WAIT}{{{controllers}}}"
    by_verb = prometheus.query(
        f"histogram_quantile(0.5, sum by (le, verb) (rate({API_LATENCY}{{{sel}}}[{window}])))"
    )
    verbs = {
        item["metric"].get("verb", "?"): float(item["value"][1])
        for item in by_verb
        if item["value"][1] not in ("NaN", "+Inf")
    }
    slowest = max(verbs, key=lambda verb: verbs[verb]) if verbs else None
    restarts = {
        item["metric"].get("pod", item["metric"].get("instance", "?")): round(
            float(item["value"][1])
        )
        for item in prometheus.query(
            f"max by (pod, instance) (changes(process_start_time_seconds{{{sel}}}[{window}]))"
        )
    }
    status = f"leader_election_master_status{{{sel}}}"
    # Lost and taken again (1, 0, 1), or held in the window and let go now.
    flips = prometheus.scalar(f"max(changes({status}[{window}]))") or 0.0
    let_go = prometheus.query(f"(max_over_time({status}[{window}]) == 1) and ({status} == 0)")
    api = f"{API_LATENCY}{{{sel}}}"
    return Signals(
        cancellations={reason: count for reason, count in cancellations.items() if count},
        api_p50_ms=_milliseconds(prometheus, _quantile(0.5, api, window)),
        baseline_api_p50_ms=_milliseconds(prometheus, _baseline(0.5, api, window)),
        slowest_call=f"{slowest} calls" if slowest else None,
        slowest_call_p50_ms=1000 * verbs[slowest] if slowest else 0.0,
        leader_dropped=flips >= 2 or bool(let_go),
        restarts={pod: count for pod, count in restarts.items() if count},
        reconciles_by_namespace={ns: count for ns, count in by_namespace.items() if count},
        queue_wait_p99_ms=_milliseconds(prometheus, _quantile(0.99, queue, window)),
        baseline_queue_wait_p99_ms=_milliseconds(prometheus, _baseline(0.99, queue, window)),
    )


def _quantile(quantile: float, buckets: str, window: str) -> str:
    """The histogram's `quantile` over the window, all its series together."""
    return f"histogram_quantile({quantile}, sum by (le) (rate({buckets}[{window}])))"


def _baseline(quantile: float, buckets: str, window: str) -> str:
    """The healthy level of the histogram's `quantile`: a low quantile of its per-minute
    value over the `BASELINE_RANGE` before the window."""
    return (
        f"quantile_over_time({BASELINE_QUANTILE}, ({_quantile(quantile, buckets, '1m')})"
        f"[{BASELINE_RANGE}:1m] offset {window})"
    )


def _milliseconds(prometheus: PrometheusAPI, seconds: str) -> float:
    return 1000 * (prometheus.scalar(seconds) or 0.0)


def firing_alerts(prometheus: PrometheusAPI, target: Target) -> list[Alert]:
    """Wukong's alerts pending or firing for the target's pods."""

    def matches(alert: Alert, label: str, pattern: str) -> bool:
        return label not in alert.labels or re.fullmatch(pattern, alert.labels[label]) is not None

    return sorted(
        (
            alert
            for alert in prometheus.alerts()
            if alert.name.startswith("Wukong")
            and matches(alert, "namespace", target.namespace)
            and matches(alert, "job", target.job)
        ),
        key=lambda alert: (alert.state != "firing", alert.name),
    )


def diagnose_live(
    prometheus: PrometheusAPI,
    target: Target,
    *,
    window: str,
    window_seconds: float,
    jaeger: JaegerQuery | None = None,
    service: str = "wukong-operator",
) -> Report:
    """Read a live cluster's telemetry over the last window and name the cause."""
    signals = read_signals(prometheus, target, window=window)
    diagnosis = diagnose(signals)
    panels: list[PanelReading] = panel_readings(
        prometheus, EVIDENCE_PANELS, variables=target.dashboard_variables(window=window)
    )
    calls = []
    if jaeger is not None and not diagnosis.healthy:
        start_us = int((time.time() - window_seconds) * 1_000_000)
        calls = slowest_calls(jaeger, service=service, start_us=start_us)
    return Report(
        diagnosis=diagnosis,
        signals=signals,
        panels=panels,
        alerts=firing_alerts(prometheus, target),
        calls=calls,
        window=window,
    )
