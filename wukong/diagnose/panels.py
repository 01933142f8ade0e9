"""The cancel-storm dashboard's panels, run against Prometheus.

`panel_readings` runs chosen panels' queries, the dashboard's variables
substituted, and keeps each series' value: the evidence an SRE would read off
the dashboard, as text. It reads the dashboard the package ships already
rendered (`wukong.dashboards.shipped`), so a plain install, without the Grafana
SDK of the `devtools` extra, runs it.
"""

import re
from dataclasses import dataclass, field

from wukong.dashboards.promql import substitute_variables
from wukong.dashboards.reading import panel_targets
from wukong.dashboards.shipped import shipped_dashboard
from wukong.diagnose.prometheus import Queries

CANCEL_STORM_DASHBOARD = "wukong-cancel-storm.json"

# The panels a diagnosis shows as its evidence, and the one it reads leadership from.
EVIDENCE_PANELS = [
    "Cancellations by reason",
    "Reconcile timeouts",
    "Deadline budget used",
    "API latency p99 by verb",
]
LEADER_PANEL = "Leader election"


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
    prometheus: Queries, titles: list[str], *, variables: dict[str, str]
) -> list[PanelReading]:
    """Run the queries of the panels named `titles`, variables substituted."""
    readings = []
    for target in panel_targets(shipped_dashboard(CANCEL_STORM_DASHBOARD)):
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


def leader_dropped(readings: list[PanelReading]) -> bool:
    """A replica's leader status reads 0 in the leader panel's readings."""
    return any(value == 0 for reading in readings for _, value in reading.series)
