"""What every Wukong dashboard is made of, built with grafana-foundation-sdk.

A dashboard module (`cancel_storm`, `node_cancellations`) describes its panels
as plain `PanelSpec`s grouped in `Row`s and its template variables; `dashboard`
turns them into the SDK's builder with the conventions they all share: panels
read the `${datasource}` variable, rows and panels are numbered in order,
latency panels with exemplars link to the `trace_datasource` (Tempo), and the
JSON has sorted keys so that renders are stable and diffs small.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

from wukong.dashboards.promql import Query

PROMETHEUS = DataSourceRef(type_val="prometheus", uid="${datasource}")

# The exemplar label that carries the trace id (wukong.metrics.observers).
EXEMPLAR_TRACE_ID_LABEL = "trace_id"

_TRACE_LINK_URL = (
    '/explore?left={"datasource":"${trace_datasource}","queries":[{"refId":"A",'
    '"queryType":"traceql","query":"${__data.fields.' + EXEMPLAR_TRACE_ID_LABEL + '}"}],'
    '"range":{"from":"${__from}","to":"${__to}"}}'
)
# Appended to the description of every panel that shows exemplars.
EXEMPLAR_NOTE = (
    " Exemplars (dots) are reconciles and API calls with a `trace_id`; with the "
    "Prometheus data source's exemplar link set to label `trace_id` and the "
    "`trace_datasource` Tempo, a click opens the trace. The panel link "
    '"Open trace in Explore" does the same from a selected exemplar.'
)


@dataclass(frozen=True, kw_only=True)
class PanelSpec:
    """A time-series panel: what it shows, how, and why it matters."""

    title: str
    description: str
    unit: str
    queries: Sequence[Query]
    stacked: bool = False
    exemplars: bool = False
    threshold: float | None = None
    stepped: bool = False
    min_value: float | None = None
    max_value: float | None = None
    width: int = 12


@dataclass(frozen=True, kw_only=True)
class Row:
    """A titled group of panels; with `repeat`, Grafana shows the row once per value of
    that variable, each copy's panels reading it as that one value."""

    title: str
    panels: Sequence[PanelSpec] = field(default_factory=tuple)
    repeat: str | None = None


def _base_panel(spec: PanelSpec, *, panel_id: int) -> timeseries.Panel:
    """The look every panel shares: size, lines, a bottom legend, a sorted tooltip."""
    return (
        timeseries.Panel()
        .id(panel_id)
        .title(spec.title)
        .description(spec.description)
        .datasource(PROMETHEUS)
        .unit(spec.unit)
        .height(8)
        .span(spec.width)
        .line_width(1)
        .fill_opacity(30 if spec.stacked else 10)
        .show_points(common.VisibilityMode.NEVER)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(
            common_builders.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
    )


def _with_threshold(panel: timeseries.Panel, value: float) -> timeseries.Panel:
    """A dashed red line at `value`."""
    steps = [Threshold(value=None, color="green"), Threshold(value=value, color="red")]
    return panel.thresholds(
        dashboard_builders.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps)
    ).thresholds_style(
        common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
    )


def _with_trace_link(panel: timeseries.Panel) -> timeseries.Panel:
    link = (
        dashboard_builders.DashboardLink("Open trace in Explore")
        .type(DashboardLinkType.LINK)
        .url(_TRACE_LINK_URL)
        .target_blank(True)
    )
    return panel.data_links([link])


def timeseries_panel(spec: PanelSpec, *, panel_id: int) -> timeseries.Panel:
    """The Grafana time-series panel of `spec`, its queries lettered A, B, ..."""
    panel = _base_panel(spec, panel_id=panel_id)
    if spec.stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    if spec.stepped:
        panel = panel.line_interpolation(common.LineInterpolation.STEP_AFTER)
    if spec.min_value is not None:
        panel = panel.min(spec.min_value)
    if spec.max_value is not None:
        panel = panel.max(spec.max_value)
    if spec.threshold is not None:
        panel = _with_threshold(panel, spec.threshold)
    if spec.exemplars:
        panel = _with_trace_link(panel)
    for index, query in enumerate(spec.queries):
        panel = panel.with_target(
            prometheus.Dataquery()
            .ref_id(chr(ord("A") + index))
            .datasource(PROMETHEUS)
            .expr(query.expr)
            .legend_format(query.legend)
            .range()
            .exemplar(spec.exemplars)
        )
    return panel


def datasource_variable(
    *, name: str, label: str, plugin: str
) -> dashboard_builders.DatasourceVariable:
    """A variable choosing the `plugin` (prometheus, tempo) data source."""
    return (
        dashboard_builders.DatasourceVariable(name)
        .label(label)
        .type(plugin)
        .description(f"The {plugin} data source the panels read.")
    )


def label_variable(
    *, name: str, label: str, query: str, description: str
) -> dashboard_builders.QueryVariable:
    """A multi-value variable over a label's values (`query` is `label_values(...)`)."""
    return (
        dashboard_builders.QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(PROMETHEUS)
        .query(query)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )


def dashboard(
    *,
    uid: str,
    title: str,
    description: str,
    variables: Sequence[Any],
    rows: Sequence[Row],
) -> dashboard_builders.Dashboard:
    """A Wukong dashboard: the shared settings, the variables, then rows of panels."""
    board = (
        dashboard_builders.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["wukong", "kubernetes", "operator"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
    )
    for variable in variables:
        board = board.with_variable(variable)
    panel_id = 0
    for row in rows:
        panel_id += 1
        header = dashboard_builders.Row(row.title).id(panel_id)
        if row.repeat:
            header = header.repeat(row.repeat)
        board = board.with_row(header)
        for spec in row.panels:
            panel_id += 1
            board = board.with_panel(timeseries_panel(spec, panel_id=panel_id))
    return board


def to_json(board: dashboard_builders.Dashboard) -> str:
    """The dashboard's JSON: sorted keys, two-space indent, a trailing newline."""
    return str(JSONEncoder(sort_keys=True, indent=2).encode(board.build())) + "\n"
