"""What `wukong diagnose` prints, and the exit status it ends with.

Exit status: 0 healthy (a restart or a rollout included: no failure), 1 an
incident (the cause is named), 2 cannot tell (`CANNOT_TELL`: the telemetry
could not be read, or holds no operator).
"""

from dataclasses import dataclass

from wukong.diagnose.panels import PanelReading
from wukong.diagnose.prometheus import Alert
from wukong.diagnose.rules import Diagnosis, Signals
from wukong.diagnose.split import CallSplit

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
            f"  API latency p50 {signals.api_p50_ms:.0f} ms ("
            + (
                f"healthy {signals.baseline_api_p50_ms:.0f} ms)"
                if signals.baseline_api_p50_ms
                else "no healthy baseline in the hour before)"
            ),
            "  alerts pending or firing: "
            + (", ".join(alert.describe() for alert in self.alerts) or "none"),
            *(f"  panel {reading.describe()}" for reading in self.panels),
        ]
        if self.calls:
            lines.append("  slowest API calls, where their time went:")
            lines += [f"    {call.describe()}" for call in self.calls]
        return "\n".join(lines)
