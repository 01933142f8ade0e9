"""Every Wukong dashboard as a JSON file.

`render_dashboards()` is what `wukong dashboards render` writes under
`dashboards/` and into the package (`wukong.dashboards.shipped`), and what
`wukong deploy render` copies into the chart; unit tests fail when the
committed files are stale. Reading the queries back out of rendered JSON is
`wukong.dashboards.reading`, which needs no Grafana SDK; its functions are
also importable from here for the callers that render and read.
"""

import json
from collections.abc import Callable

from grafana_foundation_sdk.builders.dashboard import Dashboard

from wukong.dashboards.builders import to_json
from wukong.dashboards.cancel_storm import cancel_storm_dashboard
from wukong.dashboards.node_cancellations import node_cancellations_dashboard
from wukong.dashboards.reading import (
    PanelTarget,
    concrete_targets,
    iter_panels,
    panel_queries,
    panel_targets,
    variable_queries,
)

__all__ = [
    "DASHBOARDS",
    "PanelTarget",
    "concrete_targets",
    "iter_panels",
    "panel_queries",
    "panel_targets",
    "render_dashboards",
    "variable_queries",
]

DASHBOARDS: tuple[Callable[[], Dashboard], ...] = (
    cancel_storm_dashboard,
    node_cancellations_dashboard,
)


def render_dashboards() -> dict[str, str]:
    """File name (`<uid>.json`) → dashboard JSON, in file-name order."""
    rendered = {}
    for build in DASHBOARDS:
        text = to_json(build())
        rendered[f"{json.loads(text)['uid']}.json"] = text
    return dict(sorted(rendered.items()))
