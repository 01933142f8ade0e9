"""Every Wukong dashboard as a JSON file, and reading the queries back out of one.

`render_dashboards()` is what `wukong dashboards render` writes under
`dashboards/` and `wukong deploy render` copies into the chart; unit tests fail
when the committed files are stale. The reading side (`panel_targets`,
`panel_queries`, `concrete_targets`, `variable_queries`) works on rendered JSON, so that tests and
the demo check and run exactly what Grafana would.
"""

import dataclasses
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders.dashboard import Dashboard

from wukong.dashboards.builders import to_json
from wukong.dashboards.cancel_storm import cancel_storm_dashboard
from wukong.dashboards.node_cancellations import node_cancellations_dashboard
from wukong.dashboards.promql import substitute_variables

DASHBOARDS: tuple[Callable[[], Dashboard], ...] = (
    cancel_storm_dashboard,
    node_cancellations_dashboard,
)
# A Grafana variable reference; `$1` (a label_replace group) is not one.
_VARIABLE = re.compile(r"\$\{?[A-Za-z_]\w*\}?")


def render_dashboards() -> dict[str, str]:
    """File name (`<uid>.json`) → dashboard JSON, in file-name order."""
    rendered = {}
    for build in DASHBOARDS:
        text = to_json(build())
        rendered[f"{json.loads(text)['uid']}.json"] = text
    return dict(sorted(rendered.items()))


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
