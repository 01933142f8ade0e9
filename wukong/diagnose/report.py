"""What `wukong diagnose` prints, and the exit status it ends with.

Exit status: 0 healthy (a restart or a rollout included: no failure), 1 an
incident (the cause is named), 2 cannot tell (`CANNOT_TELL`: the telemetry
could not be read, or holds no operator).
"""

from collections.abc import Mapping
from dataclasses import dataclass

from wukong.diagnose.panels import PanelReading
from wukong.diagnose.prometheus import Alert
from wukong.diagnose.rules import Diagnosis, Signals
from wukong.diagnose.split import CallSplit

# How many namespaces the report lists by their share of the reconciles.
SHOWN_NAMESPACES = 3

HEALTHY_STATUS = 0
INCIDENT_STATUS = 1
CANNOT_TELL = 2


@dataclass(frozen=True, kw_only=True)
class Report:
    diagnosis: Diagnosis
    signals: Signals
    panels: list[PanelReading]
    alerts: list[Alert]
    calls: list[CallSplit]
    window: str

    @property
    def exit_status(self) -> int:
        return HEALTHY_STATUS if self.diagnosis.healthy else INCIDENT_STATUS

    def render(self) -> str:
        signals = self.signals
        cancelled = (
            ", ".join(
                f"{reason} x{count}"
                for reason, count in sorted(signals.cancellations.items(), key=lambda e: -e[1])
            )
            or "none"
        )
        lines = [
            f"diagnosis: {self.diagnosis.cause} (last {self.window})",
            f"  why: {self.diagnosis.explanation}",
            f"  cancelled reconciles: {cancelled}",
            f"  API latency p50 {signals.api_p50_ms:.0f} ms "
            + _against(signals.baseline_api_p50_ms),
            f"  queue wait p99 {signals.queue_wait_p99_ms:.0f} ms "
            + _against(signals.baseline_queue_wait_p99_ms),
            f"  reconciles by namespace: {_shares(signals.reconciles_by_namespace)}",
            # Shown whatever the cause: a single restart is no crash loop, but it is
            # what an SRE looks for next (a replica gone, a Lease lost before a scrape).
            f"  operator restarts: {_restarts(signals.restarts)}",
            "  leader status: "
            + ("a replica's dropped to 0" if signals.leader_dropped else "no drop seen"),
            "  alerts pending or firing: "
            + (", ".join(alert.describe() for alert in self.alerts) or "none"),
            *(f"  panel {reading.describe()}" for reading in self.panels),
        ]
        if self.calls:
            lines.append("  slowest API calls, where their time went:")
            lines += [f"    {call.describe()}" for call in self.calls]
        return "\n".join(lines)


def _against(baseline_ms: float) -> str:
    if baseline_ms:
        return f"(healthy {baseline_ms:.0f} ms)"
    return "(no healthy baseline in the hour before)"


def _shares(counts: Mapping[str, int]) -> str:
    """ "noisy 90%, quiet 6% (of 1200)": the namespaces doing most of the work."""
    total = sum(counts.values())
    if not total:
        return "none"
    ranked = sorted(counts.items(), key=lambda item: -item[1])[:SHOWN_NAMESPACES]
    shares = ", ".join(f"{namespace} {count / total:.0%}" for namespace, count in ranked)
    return f"{shares} (of {total})"


def _restarts(restarts: Mapping[str, int]) -> str:
    """ "wukong-7d9-x2 x2, wukong-7d9-q1 x1": how often each replica's process started again."""
    ranked = sorted(restarts.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{pod} x{count}" for pod, count in ranked) or "none"
