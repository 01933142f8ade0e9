"""Reading the queries back out of a rendered dashboard's JSON.

Tests, the demo and `wukong diagnose` check and run exactly what Grafana
would: every panel's queries with their titles and legends, the queries with
the dashboard's variables set, and the variables' own queries. It works on
JSON alone, so it imports without the Grafana SDK (`wukong diagnose` runs
from a plain install).
"""

import dataclasses
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from wukong.dashboards.promql import substitute_variables

# A Grafana variable reference; `$1` (a label_replace group) is not one.
_VARIABLE = re.compile(r"\$\{?[A-Za-z_]\w*\}?")


def _panels(panels: list[Any]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def iter_panels(dashboard_json: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, rows included, panels inside collapsed rows too."""
    yield from _panels(dashboard_json.get("panels", []))


@dataclass(frozen=True)
class PanelTarget:
    title: str  # the panel's
    expr: str
    legend: str  # Grafana's legend format, e.g. "p99 {{controller}}"


def panel_targets(dashboard_json: dict[str, Any]) -> list[PanelTarget]:
    """Every query of every panel, with its panel's title and legend, in panel order."""
    return [
        PanelTarget(
            title=str(panel.get("title", "")),
            expr=str(target["expr"]),
            legend=str(target.get("legendFormat") or ""),
        )
        for panel in iter_panels(dashboard_json)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def panel_queries(dashboard_json: dict[str, Any]) -> list[str]:
    """Every query expression of every panel, in panel order."""
    return [target.expr for target in panel_targets(dashboard_json)]


def concrete_targets(
    dashboard_json: dict[str, Any], variables: Mapping[str, str]
) -> list[PanelTarget]:
    """Every panel query as Grafana sends it to Prometheus, its variables set to
    `variables`. A variable left without a value is a ValueError naming it and its
    panel: sent as is, the query would be rejected or match nothing."""
    targets = []
    for target in panel_targets(dashboard_json):
        expr = substitute_variables(target.expr, variables)
        unset = _VARIABLE.findall(expr)
        if unset:
            raise ValueError(f"panel {target.title!r}: no value for {', '.join(unset)} in {expr}")
        targets.append(dataclasses.replace(target, expr=expr))
    return targets


def variable_queries(dashboard_json: dict[str, Any]) -> dict[str, str]:
    """The query of every query variable (`label_values(...)`), by name, in the order
    Grafana resolves them (a variable's query may use the ones before it)."""
    return {
        str(variable["name"]): str(variable["query"])
        for variable in dashboard_json.get("templating", {}).get("list", [])
        if variable.get("type") == "query"
    }
