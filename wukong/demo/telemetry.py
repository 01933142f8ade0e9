"""Reading what the operator reported in its spans.

`summarize_traces` condenses the operator's spans, read back from Jaeger, into the facts an
SRE looks for first (how many reconciles were cancelled and why, how slow the
API calls were and which one was slowest, how much of a reconcile was spent
waiting on the API); `TraceSummary.signals` turns them into what the
diagnosis rules (`wukong.diagnose.rules`) read.
"""

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass

from wukong.diagnose.jaeger import JaegerSpan
from wukong.diagnose.rules import Signals


@dataclass(frozen=True)
class TraceSummary:
    reconciles: int
    cancellations: Counter[str]
    api_calls: int
    api_p50_ms: float
    slowest_call: str | None  # "verb resource" with the highest median duration
    slowest_call_p50_ms: float
    api_share: float  # time in API calls / time in reconciles

    @property
    def dominant_reason(self) -> str | None:
        top = self.cancellations.most_common(1)
        return top[0][0] if top else None

    def signals(self, *, baseline_api_p50_ms: float, leader_dropped: bool) -> Signals:
        """What the diagnosis rules read, from these spans and the leader panel."""
        return Signals(
            cancellations=self.cancellations,
            api_p50_ms=self.api_p50_ms,
            baseline_api_p50_ms=baseline_api_p50_ms,
            slowest_call=self.slowest_call,
            slowest_call_p50_ms=self.slowest_call_p50_ms,
            leader_dropped=leader_dropped,
        )

    def describe(self) -> str:
        reasons = ", ".join(f"{r} x{n}" for r, n in self.cancellations.most_common()) or "none"
        slowest = (
            f"slowest call {self.slowest_call} (p50 {self.slowest_call_p50_ms:.0f} ms)"
            if self.slowest_call
            else "no API calls"
        )
        return (
            f"{self.reconciles} reconciles, cancelled: {reasons}; {self.api_calls} API calls, "
            f"p50 {self.api_p50_ms:.0f} ms, {slowest}; "
            f"{100 * self.api_share:.0f}% of reconcile time waiting on the API"
        )


def _ms(span: JaegerSpan) -> float:
    return span.duration_us / 1e3


def summarize_traces(spans: list[JaegerSpan], *, since_us: int = 0) -> TraceSummary:
    recent = [span for span in spans if span.start_us >= since_us]
    reconciles = [span for span in recent if span.name.startswith("reconcile ")]
    calls = [span for span in recent if "k8s.verb" in span.tags]
    cancellations = Counter(
        str(span.tags["wukong.cancel.reason"])
        for span in reconciles
        if "wukong.cancel.reason" in span.tags
    )
    by_call: defaultdict[str, list[float]] = defaultdict(list)
    for span in calls:
        by_call[span.name].append(_ms(span))
    medians = {name: statistics.median(values) for name, values in by_call.items()}
    slowest = max(medians, key=lambda name: medians[name]) if medians else None
    reconcile_ms = sum(_ms(span) for span in reconciles)
    return TraceSummary(
        reconciles=len(reconciles),
        cancellations=cancellations,
        api_calls=len(calls),
        api_p50_ms=statistics.median([_ms(span) for span in calls]) if calls else 0.0,
        slowest_call=slowest,
        slowest_call_p50_ms=medians[slowest] if slowest else 0.0,
        api_share=min(1.0, sum(_ms(span) for span in calls) / reconcile_ms)
        if reconcile_ms
        else 0.0,
    )
