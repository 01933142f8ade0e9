"""Reading what the operator reported: its spans and its dashboard panels.

`summarize_traces` condenses the spans an OTLP receiver kept into the facts an
SRE looks for first (how many reconciles were cancelled and why, how slow the
API calls were and which one was slowest, how much of a reconcile was spent
waiting on the API). `panel_readings` runs chosen panels of the cancel-storm
dashboard, variables substituted, against Prometheus.
"""

import json
import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from wukong.dashboards import cancel_storm
from wukong.dashboards.promql import substitute_variables
from wukong.dashboards.render import panel_targets, render_dashboards
from wukong.devcluster.prometheus import LocalPrometheus
from wukong.tracing.receiver import ReceivedSpan

CANCEL_STORM_DASHBOARD = f"{cancel_storm.UID}.json"


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


def _ms(span: ReceivedSpan) -> float:
    return (span.end_ns - span.start_ns) / 1e6


def summarize_traces(spans: list[ReceivedSpan], *, since_ns: int = 0) -> TraceSummary:
    recent = [span for span in spans if span.start_ns >= since_ns]
    reconciles = [span for span in recent if span.name.startswith("reconcile ")]
    calls = [span for span in recent if "k8s.verb" in span.attributes]
    cancellations = Counter(
        str(span.attributes["wukong.cancel.reason"])
        for span in reconciles
        if "wukong.cancel.reason" in span.attributes
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


@dataclass(frozen=True)
class PanelReading:
    title: str
    expr: str
    legend: str
    series: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def describe(self) -> str:
        values = ", ".join(
            f"{self.series_name(labels)}={value:.3g}" for labels, value in self.series[:4]
        )
        return f"{self.title}: {values or 'no data'}"

    def series_name(self, labels: dict[str, str]) -> str:
        """The series' name as the panel's legend shows it."""
        return _LEGEND_LABEL.sub(lambda m: labels.get(m.group(1), ""), self.legend).strip()


_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def panel_readings(
    prometheus: LocalPrometheus,
    titles: list[str],
    *,
    variables: dict[str, str],
) -> list[PanelReading]:
    """Run the queries of the panels named `titles`, variables substituted."""
    dashboard: dict[str, Any] = json.loads(render_dashboards()[CANCEL_STORM_DASHBOARD])
    readings = []
    for target in panel_targets(dashboard):
        if target.title not in titles:
            continue
        concrete = substitute_variables(target.expr, variables)
        series = [
            (dict(item.get("metric") or {}), float(item["value"][1]))
            for item in prometheus.query(concrete)
            if "value" in item and item["value"][1] not in ("NaN", "+Inf", "-Inf")
        ]
        series.sort(key=lambda entry: -entry[1])
        readings.append(
            PanelReading(title=target.title, expr=concrete, legend=target.legend, series=series)
        )
    return readings
