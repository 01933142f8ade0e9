""" "Wukong / Cancel storm": everything needed to tell a cancel storm from ordinary load.

Rows, top to bottom, in the order an SRE asks the questions: are reconciles
being cancelled, and why (results, what drives them, cancellations by reason,
timeouts)? Are they
pressed against their deadline (reconcile time with the deadline drawn, the
share of the deadline used)? Do `RequeueAfter` requeues start late (a
reconcile cut by a timeout adds the cancellation and its clean-up to the delay
it asked for)? Then the workqueue, the API client and
leadership, the usual causes. Latency panels carry exemplars that open the
reconcile's trace. Then the replicas, a row each (Grafana repeats it per
`pod`): the shards it holds and their handoffs, its reconciles and its queue,
so active-active replicas (`wukong run --shards`) show whether the load is
shared and where it moved. Last, the fleets: each WukongSet's desired, ready and
migrating members (a scale-in blocked by migrations shows as desired below
the others).

Operator metrics are filtered by the Prometheus target labels of the
operator's pods (`namespace`, `job`, and `pod` in the replicas' row) plus
`controller` for the families that carry it; the API client, leader election,
the shards and the WukongSets' counts are process-wide.
"""

from grafana_foundation_sdk.builders import dashboard as dashboard_builders

from wukong.dashboards.builders import (
    EXEMPLAR_NOTE,
    PanelSpec,
    Row,
    dashboard,
    datasource_variable,
    label_variable,
)
from wukong.dashboards.promql import Query, quantiles, rate
from wukong.runtime import DEFAULT_RECONCILE_TIMEOUT

UID = "wukong-cancel-storm"
TITLE = "Wukong / Cancel storm"

_TARGET = 'namespace=~"$namespace", job=~"$job"'
_CONTROLLER = _TARGET + ', controller=~"$controller"'


# The per-tenant reconciles panel's title (the cancel-storm end-to-end test reads it).
TENANT_RECONCILES_PANEL = "Reconciles by tenant (top namespaces)"


def _reconcile_outcomes() -> list[PanelSpec]:
    """How reconciles end: results, cancellations by reason, timeouts."""
    return [
        PanelSpec(
            title="Reconcile rate by result",
            description="Reconciles finished per second, by controller and result "
            "(success, error, requeue, requeue_after). A cancel storm shows as errors "
            "and requeues rising while successes fall.",
            unit="ops",
            queries=[
                Query(
                    expr=rate(
                        "controller_runtime_reconcile_total",
                        selector=_CONTROLLER,
                        by="controller, result",
                    ),
                    legend="{{controller}} {{result}}",
                )
            ],
        ),
        PanelSpec(
            title="What drives reconciles",
            description="What put reconciled keys in the queue, per second, stacked by "
            "trigger: event (a watch event of the object, a child it owns or a watched "
            "object), requeue_after, requeue, error_backoff, cancelled_backoff, "
            "sync_period, manual. Adds coalesced into one reconcile count one each, so "
            "the stack may exceed the reconcile rate. In a cancel storm cancelled_backoff "
            "grows and feeds itself; a reconcile's span lists its triggers "
            "(wukong.reconcile.triggers).",
            unit="ops",
            stacked=True,
            queries=[
                Query(
                    expr=rate(
                        "wukong_reconcile_triggers_total", selector=_CONTROLLER, by="trigger"
                    ),
                    legend="{{trigger}}",
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
                    expr=rate(
                        "wukong_reconcile_cancellations_total", selector=_CONTROLLER, by="reason"
                    ),
                    legend="{{reason}}",
                )
            ],
        ),
        PanelSpec(
            title="Namespaces with the most cancellations (top 5)",
            description="Which tenant is storming: cancellations per second in the "
            "namespaces of the reconciled objects that cancel the most. The operator "
            "exports only its top 10 namespaces by recent cancellations "
            "(wukong_top_namespace_cancellations_total), never a series per namespace on "
            "every family. Namespaces are served round-robin, so one storming tenant "
            "does not delay the others' reconciles.",
            unit="ops",
            queries=[
                Query(
                    expr="topk(5, "
                    + rate(
                        "wukong_top_namespace_cancellations_total",
                        selector=_CONTROLLER,
                        by="object_namespace",
                    )
                    + ")",
                    legend="{{object_namespace}}",
                )
            ],
        ),
        PanelSpec(
            title=TENANT_RECONCILES_PANEL,
            description="Which tenant the operator works for most: reconciles per second "
            "in the namespaces of the reconciled objects that reconcile the most (the "
            "operator's top 10 namespaces by recent reconciles, "
            "wukong_top_namespace_reconciles_total). One namespace taking most of the "
            "reconciles is a noisy tenant: `wukong diagnose` names it; beside the "
            "cancellations above, it tells a tenant that storms from one that only churns.",
            unit="ops",
            queries=[
                Query(
                    expr="topk(5, "
                    + rate(
                        "wukong_top_namespace_reconciles_total",
                        selector=_CONTROLLER,
                        by="object_namespace",
                    )
                    + ")",
                    legend="{{object_namespace}}",
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
                    expr=rate(
                        "controller_runtime_reconcile_timeouts_total",
                        selector=_CONTROLLER,
                        by="controller",
                    ),
                    legend="{{controller}}",
                )
            ],
        ),
    ]


def _reconcile_time() -> list[PanelSpec]:
    """How long reconciles take against their deadline, and how late requeues start."""
    deadline = DEFAULT_RECONCILE_TIMEOUT
    return [
        PanelSpec(
            title="Reconcile duration (p50/p99)",
            description="Reconcile duration quantiles by controller. The dashed red "
            f"line is the default reconcile deadline ({deadline:g} s): a threshold of "
            "the panel, not a query, because the deadline is a flag "
            "(`--reconcile-timeout`) and not a metric; edit the threshold if the "
            "operator runs with another value. A p99 pressed against the line means "
            "reconciles are being cut off by the deadline." + EXEMPLAR_NOTE,
            unit="s",
            exemplars=True,
            threshold=deadline,
            queries=quantiles(
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
            queries=quantiles(
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
            "requeues wait behind busy workers, or when a reconcile cut short by a timeout "
            "adds the cancellation and its clean-up to the delay it asked for.",
            unit="s",
            queries=quantiles(
                "wukong_requeue_delay_seconds",
                selector=_CONTROLLER,
                by="controller",
                legend="{{controller}}",
            ),
        ),
    ]


def _workqueue() -> Row:
    def p99(metric: str, *, title: str, description: str) -> PanelSpec:
        return PanelSpec(
            title=title,
            description=description,
            unit="s",
            width=6,
            queries=quantiles(
                metric,
                selector=_CONTROLLER,
                by="controller, name",
                legend="{{controller}}",
                qs=(0.99,),
            ),
        )

    depth = f"sum by (controller, name) (workqueue_depth{{{_CONTROLLER}}})"
    retries = rate("workqueue_retries_total", selector=_CONTROLLER, by="controller, name")
    return Row(
        title="Workqueue",
        panels=(
            PanelSpec(
                title="Workqueue depth",
                description="Items waiting in each controller's workqueue, read at scrape "
                "time. A depth that keeps growing means reconciles (or their requeues) "
                "arrive faster than the workers finish them.",
                unit="short",
                width=6,
                queries=[Query(expr=depth, legend="{{controller}}")],
            ),
            p99(
                "workqueue_queue_duration_seconds",
                title="Queue wait p99",
                description="99th percentile of how long an item stayed in the workqueue "
                "before a worker took it.",
            ),
            p99(
                "workqueue_work_duration_seconds",
                title="Work duration p99",
                description="99th percentile of how long a worker spent on one item, from "
                "taking it off the queue to marking it done.",
            ),
            PanelSpec(
                title="Workqueue retries",
                description="Rate-limited re-adds per second (errors and cancellations "
                "requeued with backoff), by controller.",
                unit="ops",
                width=6,
                queries=[Query(expr=retries, legend="{{controller}}")],
            ),
        ),
    )


def _api_client() -> Row:
    requests = rate("rest_client_requests_total", selector=_TARGET, by="method, code")
    cancelled = rate("wukong_api_request_cancellations_total", selector=_TARGET, by="reason")
    return Row(
        title="Kubernetes API client",
        panels=(
            PanelSpec(
                title="API requests by method and code",
                description="Requests per second the operator made to the kube-apiserver, "
                "by HTTP method and status code. Not per controller: the client is shared.",
                unit="reqps",
                width=8,
                queries=[Query(expr=requests, legend="{{method}} {{code}}")],
            ),
            PanelSpec(
                title="API latency p99 by verb",
                description="99th percentile of API request latency, by verb. Calls made "
                "from a reconcile are bounded by its remaining deadline, so a slow API "
                "server turns directly into api_timeout and deadline cancellations."
                + EXEMPLAR_NOTE,
                unit="s",
                width=8,
                exemplars=True,
                queries=quantiles(
                    "rest_client_request_duration_seconds",
                    selector=_TARGET,
                    by="verb",
                    legend="{{verb}}",
                    qs=(0.99,),
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
                queries=[Query(expr=cancelled, legend="{{reason}}")],
            ),
        ),
    )


def _leadership() -> Row:
    status = f"max by (pod, name) (leader_election_master_status{{{_TARGET}}})"
    return Row(
        title="Leadership",
        panels=(
            PanelSpec(
                title="Leader election",
                description="1 while a pod holds the leader Lease, 0 otherwise, per pod and "
                "Lease name. Exactly one pod should be at 1 for each name; a handover lines "
                "up with leader_lost cancellations above. Sharded replicas hold a Lease per "
                "shard (wukong-operator-shard-<i>), each by one pod, several per pod.",
                unit="bool",
                width=24,
                stepped=True,
                min_value=0,
                max_value=1,
                queries=[Query(expr=status, legend="{{pod}} {{name}}")],
            ),
        ),
    )


# The variable the replicas' row repeats over, and its panels' titles (the sharded
# dashboard test reads them with real sharded replicas).
REPLICA_VARIABLE = "replica"
SHARDS_HELD_PANEL = "Shards held"
RECONCILES_PANEL = "Reconciles per second"
QUEUE_DEPTH_PANEL = "Queue depth"
HANDOFFS_PANEL = "Shard handoffs by reason"
SPACE_CONFLICT_PANEL = "Shard space conflict"


def _replica_panel(
    title: str,
    description: str,
    expr: str,
    *,
    unit: str,
    legend: str = "{{pod}}",
    stacked: bool = False,
    stepped: bool = False,
    max_value: float | None = None,
) -> PanelSpec:
    """A quarter-wide panel of the replicas' row with one query; a stepped one is a
    count or a flag, drawn from 0."""
    return PanelSpec(
        title=title,
        description=description,
        unit=unit,
        width=6,
        stacked=stacked,
        stepped=stepped,
        min_value=0 if stepped else None,
        max_value=max_value,
        queries=[Query(expr=expr, legend=legend)],
    )


def _replica() -> Row:
    """One row per operator pod: what it holds, what it does, what moved."""
    replica = f'pod=~"${REPLICA_VARIABLE}"'
    target = f"{_TARGET}, {replica}"
    controller = f"{_CONTROLLER}, {replica}"
    held = f"max by (pod) (wukong_shards_held{{{target}}})"
    reconciles = rate("controller_runtime_reconcile_total", selector=controller, by="pod")
    depth = f"sum by (pod) (workqueue_depth{{{controller}}})"
    handoffs = rate("wukong_shard_handoffs_total", selector=target, by="pod, reason")
    conflict = f"max by (pod) (wukong_shard_space_conflict{{{target}}})"
    return Row(
        title=f"Replica ${REPLICA_VARIABLE}",
        repeat=REPLICA_VARIABLE,
        panels=(
            _replica_panel(
                SHARDS_HELD_PANEL,
                "Shards this replica holds (active-active, `wukong run "
                "--shards`; 0 with sharding off, or while it waits for its share). The "
                "replicas' rows add up to the shard count; the namespaces of a shard, and "
                "all their objects, are reconciled by its holder only.",
                held,
                unit="short",
                stepped=True,
            ),
            _replica_panel(
                RECONCILES_PANEL,
                "Reconciles this replica finished per second, every result, "
                "for the selected controllers. With sharding on the replicas share the "
                "work; a replica far above the others holds a busy namespace's shard.",
                reconciles,
                unit="ops",
            ),
            _replica_panel(
                QUEUE_DEPTH_PANEL,
                "Items waiting in this replica's workqueues, for the selected "
                "controllers. A shard taken over arrives as a burst of adds (its objects "
                "are listed again) and drains here.",
                depth,
                unit="short",
            ),
            _replica_panel(
                HANDOFFS_PANEL,
                "Shards that came to or left this replica, per second, by "
                "reason: acquired, rebalance (given to a replica that joined), lost (its "
                "Lease not renewed in time or taken: look for leader_lost cancellations "
                "above), shutdown (released on SIGTERM). Quiet between scalings and "
                "restarts.",
                handoffs,
                unit="ops",
                legend="{{reason}}",
                stacked=True,
            ),
            _replica_panel(
                SPACE_CONFLICT_PANEL,
                "1 while this replica waits for replicas of another shard "
                "space (another --shards or --shard-by, or sharding on against off) to "
                "go: it holds no shard and reconciles nothing until their Leases are "
                "released or expire (README, Scale out). Expected for a round or two in a "
                "rolling update that changes the space; 1 for longer means old pods are "
                "still running (its log names them). 0 otherwise.",
                conflict,
                unit="short",
                stepped=True,
                max_value=1,
            ),
        ),
    )


# The WukongSet panel's title: the cancel-storm end-to-end test runs no set, the
# WukongSet metrics test reads this panel with real sets.
WUKONGSET_PANEL = "WukongSet members: desired, ready, migrating"


def _fleets() -> Row:
    # Every operator replica serves the counts from its own cache: one value per set.
    members = (
        "max by (object_namespace, wukongset, state) (wukong_wukongset_replicas"
        f'{{{_TARGET}, state=~"desired|ready|migrating"}})'
    )
    return Row(
        title="Fleets",
        panels=(
            PanelSpec(
                title=WUKONGSET_PANEL,
                description="Members of each WukongSet: desired (spec.replicas), ready, and "
                "live migrating. Ready below desired is a scale-out or a rollout under way "
                "(or members failing); ready above desired while migrating is above 0 is a "
                "scale-in waiting for migrations to end (ScalingBlocked): a migrating member "
                "is never removed.",
                unit="short",
                width=24,
                stepped=True,
                min_value=0,
                queries=[
                    Query(expr=members, legend="{{object_namespace}}/{{wukongset}} {{state}}")
                ],
            ),
        ),
    )


def _variables() -> list[object]:
    return [
        datasource_variable(name="datasource", label="Prometheus", plugin="prometheus"),
        datasource_variable(name="trace_datasource", label="Traces", plugin="tempo"),
        label_variable(
            name="namespace",
            label="Namespace",
            query="label_values(controller_runtime_reconcile_total, namespace)",
            description="Namespace of the operator's pods (Prometheus target label).",
        ),
        label_variable(
            name="job",
            label="Job",
            query='label_values(controller_runtime_reconcile_total{namespace=~"$namespace"}, job)',
            description="Prometheus scrape job of the operator.",
        ),
        label_variable(
            name="controller",
            label="Controller",
            query="label_values(controller_runtime_reconcile_total"
            '{namespace=~"$namespace", job=~"$job"}, controller)',
            description="Controllers to show; panels without a controller label (API "
            "client, leadership, shards) show the whole process.",
        ),
        label_variable(
            name=REPLICA_VARIABLE,
            label="Replica",
            query='label_values(wukong_shards_held{namespace=~"$namespace", job=~"$job"}, pod)',
            description="Operator pods (Prometheus target label `pod`): the replicas' "
            "row is repeated for each.",
        ),
    ]


def cancel_storm_dashboard() -> dashboard_builders.Dashboard:
    """ "Wukong / Cancel storm": reconciles, cancellations, queue, API, leadership and
    each replica's share."""
    return dashboard(
        uid=UID,
        title=TITLE,
        description="Is the operator in a cancel storm? Reconcile results and "
        "cancellations by reason, reconcile time against the deadline, requeue lateness, "
        "the workqueue, the API client and leadership, for the selected controllers; "
        "each replica's shards, reconciles, queue and handoffs; and the WukongSets' "
        "desired, ready and migrating members.",
        variables=_variables(),
        rows=[
            Row(title="Reconciles", panels=(*_reconcile_outcomes(), *_reconcile_time())),
            _workqueue(),
            _api_client(),
            _leadership(),
            _replica(),
            _fleets(),
        ],
    )
