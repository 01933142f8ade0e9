"""Wukong's Grafana dashboards, built as code with grafana-foundation-sdk.

Two dashboards, rendered to JSON by `wukong dashboards render` and committed
under `dashboards/` (a unit test fails when the committed files are stale):

- **Wukong / Cancel storm** (`wukong-cancel-storm`): everything needed to tell a
  cancel storm from ordinary load. Reconcile results, cancellations by reason,
  timeouts, reconcile time against the deadline, the share of the deadline
  used, how late `RequeueAfter` requeues really ran (the amplification of seed
  003 §2.4), the workqueue, the API client and leadership.
- **Wukong / Node cancellations** (`wukong-node-cancellations`): what the node
  agent's eBPF probes saw, per node, pod, runtime and reason, for every
  controller process on the node (Wukong and Go controllers alike).

Every query reads only metric families of the contract (DESIGN.md,
`wukong.metrics.definitions`), filters by the dashboard's template variables
and uses `$__rate_interval`, never a fixed range, so the panels stay right for
any scrape interval. Latency panels query exemplars; the exemplars carry the
`trace_id` label and the panels link to the `trace_datasource` (Tempo).

`panel_queries()` lists every expression of a rendered dashboard so that tests
can check them, and run them against a real Prometheus.
"""

import json
from collections.abc import Iterator, Sequence
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

CANCEL_STORM_UID = "wukong-cancel-storm"
NODE_CANCELLATIONS_UID = "wukong-node-cancellations"

# The reconcile deadline Wukong applies unless `--reconcile-timeout` says
# otherwise (DESIGN.md, "Reconcile context").
DEFAULT_RECONCILE_DEADLINE_SECONDS = 15.0

# The exemplar label that carries the trace id (wukong.metrics.observers).
EXEMPLAR_TRACE_ID_LABEL = "trace_id"

PROMETHEUS = DataSourceRef(type_val="prometheus", uid="${datasource}")
TEMPO = DataSourceRef(type_val="tempo", uid="${trace_datasource}")

# Operator metrics: the Prometheus target labels of the operator's pods, plus
# `controller` for the families that carry it.
_TARGET = 'namespace=~"$namespace", job=~"$job"'
_CONTROLLER = _TARGET + ', controller=~"$controller"'
# Agent metrics: `node` and `namespace` are the agent's own labels (the pod
# that was cancelled), kept as exported because the agent is scraped with
# honor_labels, as node-level exporters are.
_NODE = 'job=~"$job", node=~"$node", namespace=~"$namespace"'

_TRACE_LINK_URL = (
    '/explore?left={"datasource":"${trace_datasource}","queries":[{"refId":"A",'
    '"queryType":"traceql","query":"${__data.fields.trace_id}"}],'
    '"range":{"from":"${__from}","to":"${__to}"}}'
)
_EXEMPLAR_NOTE = (
    " Exemplars (dots) are reconciles and API calls with a `trace_id`; with the "
    "Prometheus data source's exemplar link set to label `trace_id` and the "
    "`trace_datasource` Tempo, a click opens the trace. The panel link "
    '"Open trace in Explore" does the same from a selected exemplar.'
)


@dataclass(frozen=True, kw_only=True)
class Query:
    """One PromQL expression of a panel and how its series are named."""

    expr: str
    legend: str


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
    """A titled group of panels."""

    title: str
    panels: Sequence[PanelSpec] = field(default_factory=tuple)


def _rate(metric: str, *, selector: str, by: str) -> str:
    return f"sum by ({by}) (rate({metric}{{{selector}}}[$__rate_interval]))"


def _quantile(q: float, metric: str, *, selector: str, by: str) -> str:
    return (
        f"histogram_quantile({q}, sum by ({by}, le) "
        f"(rate({metric}_bucket{{{selector}}}[$__rate_interval])))"
    )


def _quantiles(
    metric: str, *, selector: str, by: str, legend: str, quantiles: Sequence[float] = (0.5, 0.99)
) -> list[Query]:
    return [
        Query(
            expr=_quantile(q, metric, selector=selector, by=by),
            legend=f"p{round(q * 100)} {legend}",
        )
        for q in quantiles
    ]


def _cancel_storm_rows() -> list[Row]:
    deadline = DEFAULT_RECONCILE_DEADLINE_SECONDS
    reconciles = Row(
        title="Reconciles",
        panels=(
            PanelSpec(
                title="Reconcile rate by result",
                description="Reconciles finished per second, by controller and result "
                "(success, error, requeue, requeue_after). A cancel storm shows as errors "
                "and requeues rising while successes fall.",
                unit="ops",
                queries=[
                    Query(
                        expr=_rate(
                            "controller_runtime_reconcile_total",
                            selector=_CONTROLLER,
                            by="controller, result",
                        ),
                        legend="{{controller}} {{result}}",
                    )
                ],
            ),
            PanelSpec(
                title="Cancellations by reason",
                description="Reconciles cancelled before they finished, per second, stacked "
                "by cancel reason (deadline_exceeded, shutdown, leader_lost, deleted, "
                "api_timeout, parent_cancelled). Each cancelled object is requeued, so a "
                "sustained band here feeds itself.",
                unit="ops",
                stacked=True,
                queries=[
                    Query(
                        expr=_rate(
                            "wukong_reconcile_cancellations_total",
                            selector=_CONTROLLER,
                            by="reason",
                        ),
                        legend="{{reason}}",
                    )
                ],
            ),
            PanelSpec(
                title="Reconcile timeouts",
                description="Reconciles per second that ran past their deadline and were "
                "cancelled (controller-runtime's reconcile_timeouts_total), by controller.",
                unit="ops",
                queries=[
                    Query(
                        expr=_rate(
                            "controller_runtime_reconcile_timeouts_total",
                            selector=_CONTROLLER,
                            by="controller",
                        ),
                        legend="{{controller}}",
                    )
                ],
            ),
            PanelSpec(
                title="Reconcile duration (p50/p99)",
                description="Reconcile duration quantiles by controller. The dashed red "
                f"line is the default reconcile deadline ({deadline:g} s): a threshold of "
                "the panel, not a query, because the deadline is a flag "
                "(`--reconcile-timeout`) and not a metric; edit the threshold if the "
                "operator runs with another value. A p99 pressed against the line means "
                "reconciles are being cut off by the deadline." + _EXEMPLAR_NOTE,
                unit="s",
                exemplars=True,
                threshold=deadline,
                queries=_quantiles(
                    "controller_runtime_reconcile_time_seconds",
                    selector=_CONTROLLER,
                    by="controller",
                    legend="{{controller}}",
                ),
            ),
            PanelSpec(
                title="Deadline budget used",
                description="Fraction of its deadline a reconcile used (elapsed / timeout). "
                "100% (dashed line) is the deadline itself; values above it are reconciles "
                "that overran before the cancellation took effect.",
                unit="percentunit",
                threshold=1.0,
                queries=_quantiles(
                    "wukong_reconcile_budget_used_ratio",
                    selector=_CONTROLLER,
                    by="controller",
                    legend="{{controller}}",
                ),
            ),
            PanelSpec(
                title="Requeue lateness (p99)",
                description="How late a requeued reconcile started: actual start minus the "
                "time RequeueAfter asked for. Near zero on a healthy loop; it grows when "
                "requeues wait behind busy workers or a deadline cancellation delays them "
                "(the RequeueAfter x timeout amplification of seed 003 §2.4).",
                unit="s",
                queries=_quantiles(
                    "wukong_requeue_delay_seconds",
                    selector=_CONTROLLER,
                    by="controller",
                    legend="{{controller}}",
                ),
            ),
        ),
    )
    workqueue = Row(
        title="Workqueue",
        panels=(
            PanelSpec(
                title="Workqueue depth",
                description="Items waiting in each controller's workqueue, read at scrape "
                "time. A depth that keeps growing means reconciles (or their requeues) "
                "arrive faster than the workers finish them.",
                unit="short",
                width=6,
                queries=[
                    Query(
                        expr=f"sum by (controller, name) (workqueue_depth{{{_CONTROLLER}}})",
                        legend="{{controller}}",
                    )
                ],
            ),
            PanelSpec(
                title="Queue wait p99",
                description="99th percentile of how long an item stayed in the workqueue "
                "before a worker took it.",
                unit="s",
                width=6,
                queries=_quantiles(
                    "workqueue_queue_duration_seconds",
                    selector=_CONTROLLER,
                    by="controller, name",
                    legend="{{controller}}",
                    quantiles=(0.99,),
                ),
            ),
            PanelSpec(
                title="Work duration p99",
                description="99th percentile of how long a worker spent on one item, from "
                "taking it off the queue to marking it done.",
                unit="s",
                width=6,
                queries=_quantiles(
                    "workqueue_work_duration_seconds",
                    selector=_CONTROLLER,
                    by="controller, name",
                    legend="{{controller}}",
                    quantiles=(0.99,),
                ),
            ),
            PanelSpec(
                title="Workqueue retries",
                description="Rate-limited re-adds per second (errors and cancellations "
                "requeued with backoff), by controller.",
                unit="ops",
                width=6,
                queries=[
                    Query(
                        expr=_rate(
                            "workqueue_retries_total",
                            selector=_CONTROLLER,
                            by="controller, name",
                        ),
                        legend="{{controller}}",
                    )
                ],
            ),
        ),
    )
    api = Row(
        title="Kubernetes API client",
        panels=(
            PanelSpec(
                title="API requests by method and code",
                description="Requests per second the operator made to the kube-apiserver, "
                "by HTTP method and status code. Not per controller: the client is shared.",
                unit="reqps",
                width=8,
                queries=[
                    Query(
                        expr=_rate(
                            "rest_client_requests_total",
                            selector=_TARGET,
                            by="method, code",
                        ),
                        legend="{{method}} {{code}}",
                    )
                ],
            ),
            PanelSpec(
                title="API latency p99 by verb",
                description="99th percentile of API request latency, by verb. Calls made "
                "from a reconcile are bounded by its remaining deadline, so a slow API "
                "server turns directly into api_timeout and deadline cancellations."
                + _EXEMPLAR_NOTE,
                unit="s",
                width=8,
                exemplars=True,
                queries=_quantiles(
                    "rest_client_request_duration_seconds",
                    selector=_TARGET,
                    by="verb",
                    legend="{{verb}}",
                    quantiles=(0.99,),
                ),
            ),
            PanelSpec(
                title="API requests cancelled by reason",
                description="API requests per second that ended without an answer, by "
                "cancel reason (api_timeout: the call's own time ran out; others: the "
                "reconcile around it was cancelled).",
                unit="reqps",
                width=8,
                stacked=True,
                queries=[
                    Query(
                        expr=_rate(
                            "wukong_api_request_cancellations_total",
                            selector=_TARGET,
                            by="reason",
                        ),
                        legend="{{reason}}",
                    )
                ],
            ),
        ),
    )
    leadership = Row(
        title="Leadership",
        panels=(
            PanelSpec(
                title="Leader election",
                description="1 while a pod holds the leader Lease, 0 otherwise, per pod and "
                "Lease name. Exactly one pod should be at 1; a handover lines up with "
                "leader_lost cancellations above.",
                unit="bool",
                width=24,
                stepped=True,
                min_value=0,
                max_value=1,
                queries=[
                    Query(
                        expr=f"max by (pod, name) (leader_election_master_status{{{_TARGET}}})",
                        legend="{{pod}} {{name}}",
                    )
                ],
            ),
        ),
    )
    return [reconciles, workqueue, api, leadership]


def _node_rows() -> list[Row]:
    def by(labels: str, legend: str, *, title: str, description: str) -> PanelSpec:
        return PanelSpec(
            title=title,
            description=description,
            unit="ops",
            stacked=True,
            queries=[
                Query(
                    expr=_rate("wukong_node_cancellations_total", selector=_NODE, by=labels),
                    legend=legend,
                )
            ],
        )

    return [
        Row(
            title="Cancellations seen by the node agent",
            panels=(
                by(
                    "node",
                    "{{node}}",
                    title="Cancellations by node",
                    description="Cancellations per second observed by the eBPF agent on "
                    "each node, across every controller process it watches.",
                ),
                by(
                    "namespace, pod",
                    "{{namespace}}/{{pod}}",
                    title="Cancellations by pod",
                    description="Cancellations per second by the pod whose process was "
                    "cancelled (the agent's own namespace and pod labels, not the "
                    "agent's).",
                ),
                by(
                    "runtime",
                    "{{runtime}}",
                    title="Cancellations by runtime",
                    description="Cancellations per second by the runtime the probe "
                    "attached to (e.g. Python asyncio in Wukong, Go context in "
                    "controller-runtime controllers).",
                ),
                by(
                    "reason",
                    "{{reason}}",
                    title="Cancellations by reason",
                    description="Cancellations per second by cancel reason, the same "
                    "reason set as the operator's own metrics, spans and logs.",
                ),
            ),
        )
    ]


def _timeseries(spec: PanelSpec, *, panel_id: int) -> timeseries.Panel:
    panel = (
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
    if spec.stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    if spec.stepped:
        panel = panel.line_interpolation(common.LineInterpolation.STEP_AFTER)
    if spec.min_value is not None:
        panel = panel.min(spec.min_value)
    if spec.max_value is not None:
        panel = panel.max(spec.max_value)
    if spec.threshold is not None:
        panel = panel.thresholds(
            dashboard_builders.ThresholdsConfig()
            .mode(ThresholdsMode.ABSOLUTE)
            .steps(
                [Threshold(value=None, color="green"), Threshold(value=spec.threshold, color="red")]
            )
        ).thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.DASHED
            )
        )
    if spec.exemplars:
        panel = panel.data_links(
            [
                dashboard_builders.DashboardLink("Open trace in Explore")
                .type(DashboardLinkType.LINK)
                .url(_TRACE_LINK_URL)
                .target_blank(True)
            ]
        )
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


def _datasource_variable(
    *, name: str, label: str, plugin: str
) -> dashboard_builders.DatasourceVariable:
    return (
        dashboard_builders.DatasourceVariable(name)
        .label(label)
        .type(plugin)
        .description(f"The {plugin} data source the panels read.")
    )


def _label_variable(
    *, name: str, label: str, query: str, description: str
) -> dashboard_builders.QueryVariable:
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


def _dashboard(
    *,
    uid: str,
    title: str,
    description: str,
    variables: Sequence[Any],
    rows: Sequence[Row],
) -> dashboard_builders.Dashboard:
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
        board = board.with_row(dashboard_builders.Row(row.title).id(panel_id))
        for spec in row.panels:
            panel_id += 1
            board = board.with_panel(_timeseries(spec, panel_id=panel_id))
    return board


def cancel_storm_dashboard() -> dashboard_builders.Dashboard:
    """ "Wukong / Cancel storm": reconciles, cancellations, queue, API and leadership."""
    return _dashboard(
        uid=CANCEL_STORM_UID,
        title="Wukong / Cancel storm",
        description="Is the operator in a cancel storm? Reconcile results and "
        "cancellations by reason, reconcile time against the deadline, requeue lateness, "
        "the workqueue, the API client and leadership, for the selected controllers.",
        variables=[
            _datasource_variable(name="datasource", label="Prometheus", plugin="prometheus"),
            _datasource_variable(name="trace_datasource", label="Traces", plugin="tempo"),
            _label_variable(
                name="namespace",
                label="Namespace",
                query="label_values(controller_runtime_reconcile_total, namespace)",
                description="Namespace of the operator's pods (Prometheus target label).",
            ),
            _label_variable(
                name="job",
                label="Job",
                query='label_values(controller_runtime_reconcile_total{namespace=~"$namespace"}, '
                "job)",
                description="Prometheus scrape job of the operator.",
            ),
            _label_variable(
                name="controller",
                label="Controller",
                query="label_values(controller_runtime_reconcile_total"
                '{namespace=~"$namespace", job=~"$job"}, controller)',
                description="Controllers to show; panels without a controller label (API "
                "client, leadership) show the whole process.",
            ),
        ],
        rows=_cancel_storm_rows(),
    )


def node_cancellations_dashboard() -> dashboard_builders.Dashboard:
    """ "Wukong / Node cancellations": what the eBPF node agent saw, per node and pod."""
    return _dashboard(
        uid=NODE_CANCELLATIONS_UID,
        title="Wukong / Node cancellations",
        description="Cancellations observed by Wukong's eBPF node agent inside every "
        "controller process on a node, by node, pod, runtime and reason.",
        variables=[
            _datasource_variable(name="datasource", label="Prometheus", plugin="prometheus"),
            _label_variable(
                name="job",
                label="Job",
                query="label_values(wukong_node_cancellations_total, job)",
                description="Prometheus scrape job of the node agent.",
            ),
            _label_variable(
                name="node",
                label="Node",
                query='label_values(wukong_node_cancellations_total{job=~"$job"}, node)',
                description="Nodes to show.",
            ),
            _label_variable(
                name="namespace",
                label="Namespace",
                query="label_values(wukong_node_cancellations_total"
                '{job=~"$job", node=~"$node"}, namespace)',
                description="Namespace of the cancelled pods (the agent's label).",
            ),
        ],
        rows=_node_rows(),
    )


def _to_json(board: dashboard_builders.Dashboard) -> str:
    return str(JSONEncoder(sort_keys=True, indent=2).encode(board.build())) + "\n"


def render_dashboards() -> dict[str, str]:
    """File name → dashboard JSON (sorted keys, two-space indent, trailing newline)."""
    boards = (cancel_storm_dashboard(), node_cancellations_dashboard())
    rendered = {}
    for board in boards:
        text = _to_json(board)
        uid = json.loads(text)["uid"]
        rendered[f"{uid}.json"] = text
    return dict(sorted(rendered.items()))


def _panels(panels: list[Any]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def iter_panels(dashboard_json: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, rows included, panels inside collapsed rows too."""
    yield from _panels(dashboard_json.get("panels", []))


def panel_queries(dashboard_json: dict[str, Any]) -> list[str]:
    """Every query expression of every panel, in panel order."""
    return [target.expr for target in panel_targets(dashboard_json)]


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


def substitute_variables(expr: str, values: dict[str, str]) -> str:
    """`expr` with Grafana variables (`$name`, `${name}`) replaced, as Grafana would."""
    # Longest names first, so $__rate_interval is not read as $__rate + "_interval".
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    return expr
