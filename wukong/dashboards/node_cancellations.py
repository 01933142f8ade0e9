""" "Wukong / Node cancellations": what the node agent's eBPF probes saw.

One family, `wukong_node_cancellations_total`, split four ways: per node, per
pod, per runtime (Python asyncio in Wukong, Go contexts in controller-runtime
controllers) and per cancel reason, for every controller process on the node,
Wukong and Go controllers alike.

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
_NODE = 'job=~"$job", node=~"$node", namespace=~"$namespace"'


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
        "controller process on a node, by node, pod, runtime and reason.",
        variables=_variables(),
        rows=[_cancellations()],
    )
