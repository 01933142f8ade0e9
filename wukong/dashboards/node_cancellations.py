""" "Wukong / Node cancellations": what the node agent's eBPF probes saw.

The counts, `wukong_node_cancellations_total`, split four ways: per node, per
pod, per runtime (Python asyncio in Wukong, Go contexts in controller-runtime
controllers) and per cancel reason, for every controller process on the node,
Wukong and Go controllers alike. Then what the counts cover: the processes the
probes are on (`wukong_node_traced_processes`: a pod missing there is
untraced, not quiet) and the events they could not deliver
(`wukong_node_events_lost_total`: the counts are short by that much).

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
                "reason set as the operator's own metrics, spans and logs.",
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
                title="Events lost",
                description="Events per second the probes could not deliver (a full "
                "buffer or map): the cancellations above are short by this much. Not "
                "split by namespace: a lost event has no pod.",
                unit="ops",
                queries=[
                    Query(
                        expr=rate(_LOST, selector=_NODE_ONLY, by="node, runtime"),
                        legend="{{node}} {{runtime}}",
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
        "the counts cover (processes traced, events lost).",
        variables=_variables(),
        rows=[_cancellations(), _coverage()],
    )
