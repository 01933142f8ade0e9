""" "Wukong / Node cancellations": what the node agent's eBPF probes saw.

The counts, `wukong_node_cancellations_total`, split four ways: per node, per
pod, per runtime (Python asyncio in Wukong, Go contexts in controller-runtime
controllers) and per cancel reason, for every controller process on the node,
Wukong and Go controllers alike. Then what the counts cover: the processes the
probes are on (`wukong_node_traced_processes`: a pod missing there is
untraced, not quiet), the processes found but not traced and why
(`wukong_node_untraced_processes_total`), what the probes could not deliver
(`wukong_node_events_lost_total`, by reason) and the cancellations of pods
past their series cap (`wukong_node_series_overflow_total`).

`node` and `namespace` are the agent's own labels (the pod that was cancelled),
kept as exported because the agent is scraped with honor_labels, as
node-level exporters are.
"""

from grafana_foundation_sdk.builders import dashboard as dashboard_builders

from wukong.dashboards.builders import (
    PanelSpec,
    Row,
    dashboard,
    datasource_variable,
    label_variable,
)
from wukong.dashboards.promql import Query, rate

UID = "wukong-node-cancellations"
TITLE = "Wukong / Node cancellations"

_FAMILY = "wukong_node_cancellations_total"
_TRACED = "wukong_node_traced_processes"
_LOST = "wukong_node_events_lost_total"
_UNTRACED = "wukong_node_untraced_processes_total"
_OVERFLOW = "wukong_node_series_overflow_total"
_NODE = 'job=~"$job", node=~"$node", namespace=~"$namespace"'
# A lost event never reached the agent's attribution: it has no pod, so no namespace.
_NODE_ONLY = 'job=~"$job", node=~"$node"'


def _split_by(labels: str, legend: str, *, title: str, description: str) -> PanelSpec:
    return PanelSpec(
        title=title,
        description=description,
        unit="ops",
        stacked=True,
        queries=[Query(expr=rate(_FAMILY, selector=_NODE, by=labels), legend=legend)],
    )


def _cancellations() -> Row:
    return Row(
        title="Cancellations seen by the node agent",
        panels=(
            _split_by(
                "node",
                "{{node}}",
                title="Cancellations by node",
                description="Cancellations per second observed by the eBPF agent on "
                "each node, across every controller process it watches.",
            ),
            _split_by(
                "namespace, pod",
                "{{namespace}}/{{pod}}",
                title="Cancellations by pod",
                description="Cancellations per second by the pod whose process was "
                "cancelled (the agent's own namespace and pod labels, not the "
                "agent's).",
            ),
            _split_by(
                "runtime",
                "{{runtime}}",
                title="Cancellations by runtime",
                description="Cancellations per second by the runtime the probe "
                "attached to (e.g. Python asyncio in Wukong, Go context in "
                "controller-runtime controllers).",
            ),
            _split_by(
                "reason",
                "{{reason}}",
                title="Cancellations by reason",
                description="Cancellations per second by cancel reason, the same "
                "reason set as the operator's own metrics, spans and logs; `unnamed`: Go "
                "cancellations of a storm past the agent's naming budget (64 per CPU per "
                "10 ms), counted exactly but without their caller or reason, which the "
                "other reasons give for the named sample.",
            ),
        ),
    )


def _coverage() -> Row:
    return Row(
        title="What the counts cover",
        panels=(
            PanelSpec(
                title="Processes traced",
                description="Controller processes with the agent's probes attached right "
                "now, by node and runtime. A pod absent here is untraced, so a count of "
                "0 above says nothing about it.",
                unit="short",
                queries=[
                    Query(
                        expr=f"sum by (node, runtime) ({_TRACED}{{{_NODE}}})",
                        legend="{{node}} {{runtime}}",
                    )
                ],
            ),
            PanelSpec(
                title="Processes not traced",
                description="Controller processes the agent found but could not trace, "
                "per second, by reason: no USDT probes in a Python, an unsupported Go "
                "version, a stripped binary whose function table cannot be read, a probe "
                "the kernel refused, or the agent's bounds on Go binaries and Python "
                "operators. Each one's notice names the process and the fix.",
                unit="ops",
                stacked=True,
                queries=[
                    Query(
                        expr=rate(_UNTRACED, selector=_NODE_ONLY, by="node, runtime, reason"),
                        legend="{{node}} {{runtime}} {{reason}}",
                    )
                ],
            ),
            PanelSpec(
                title="Events lost",
                description="What the probes could not deliver, per second, by reason. "
                "perf_buffer and counts_map_full: cancellations missing above; "
                "ring_buffer_full: a call site's first time and stack (counts exact); "
                "processes_map_full: a process counted but not filtered; process_events: "
                "new processes found by the next scan instead of at their exec. Not "
                "split by namespace: a lost event has no pod.",
                unit="ops",
                stacked=True,
                queries=[
                    Query(
                        expr=rate(_LOST, selector=_NODE_ONLY, by="node, runtime, reason"),
                        legend="{{node}} {{runtime}} {{reason}}",
                    )
                ],
            ),
            PanelSpec(
                title="Cancellations over the series cap",
                description="Cancellations of pods that already had 64 series, per "
                "second: counted here instead of by pod (a process reporting too many "
                "distinct label values).",
                unit="ops",
                queries=[
                    Query(
                        expr=rate(_OVERFLOW, selector=_NODE_ONLY, by="node"),
                        legend="{{node}}",
                    )
                ],
            ),
        ),
    )


def _variables() -> list[object]:
    return [
        datasource_variable(name="datasource", label="Prometheus", plugin="prometheus"),
        label_variable(
            name="job",
            label="Job",
            query=f"label_values({_FAMILY}, job)",
            description="Prometheus scrape job of the node agent.",
        ),
        label_variable(
            name="node",
            label="Node",
            query=f'label_values({_FAMILY}{{job=~"$job"}}, node)',
            description="Nodes to show.",
        ),
        label_variable(
            name="namespace",
            label="Namespace",
            query=f'label_values({_FAMILY}{{job=~"$job", node=~"$node"}}, namespace)',
            description="Namespace of the cancelled pods (the agent's label).",
        ),
    ]


def node_cancellations_dashboard() -> dashboard_builders.Dashboard:
    """ "Wukong / Node cancellations": what the eBPF node agent saw, per node and pod."""
    return dashboard(
        uid=UID,
        title=TITLE,
        description="Cancellations observed by Wukong's eBPF node agent inside every "
        "controller process on a node, by node, pod, runtime and reason, and what "
        "the counts cover (processes traced and not traced, events lost).",
        variables=_variables(),
        rows=[_cancellations(), _coverage()],
    )
