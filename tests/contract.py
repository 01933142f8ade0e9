"""Wukong's telemetry contract as code: docs/contract.md, checked.

Dashboards, alert rules and users' own queries rely on these names, so the
tests hold the product to them instead of reading them back from the product's
definitions (which would pass whatever the code does). The metric families, their
types and label names, the cancel reasons a `reason` label may carry, the trigger
kinds a `trigger` label may carry, and the attributes every reconcile span has.

    problems = check_exposition(text)            # the operator's /metrics
    problems = check_exposition(text, agent=True)  # the node agent's

or from a shell: `python -m tests.contract URL_OR_FILE [--agent] [--require-samples]`
(exit 0 when the exposition meets the contract, one line per problem otherwise).
"""

import sys
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

# Why a reconcile or an API call stopped early: one label set for metrics, spans,
# logs and probes.
CANCEL_REASONS = frozenset(
    {
        "deadline_exceeded",  # the reconcile's own deadline passed
        "shutdown",  # the process is stopping
        "leader_lost",  # this replica stopped leading
        "deleted",  # the object went away while it was reconciled
        "api_timeout",  # one API call ran out of its own time
        "parent_cancelled",  # cancelled from outside, with no reason given
    }
)
# The node agent traces other programs too: a context cancelled explicitly at its
# root carries no cause the agent can name; a reason a traced process reports
# that is none of these counts as `other` (its text goes to the event stream only);
# Go cancellations of a storm counted past the agent's naming budget are `unnamed`.
AGENT_CANCEL_REASONS = CANCEL_REASONS | {"canceled", "other", "unnamed"}
# What the node agent could not deliver, and why a process it found is not traced.
AGENT_LOSS_REASONS = frozenset(
    {"perf_buffer", "counts_map_full", "ring_buffer_full", "processes_map_full", "process_events"}
)
AGENT_UNTRACED_REASONS = frozenset(
    {
        "no_usdt_probes",
        "unsupported_go_version",
        "unreadable_symbols",
        "probe_failed",
        "permission",
        "too_many_binaries",
        "too_many_processes",
    }
)

# What put a reconciled key in the queue: the `trigger` label and the
# `wukong.reconcile.trigger` span attribute.
RECONCILE_TRIGGERS = frozenset(
    {
        "event",  # a watch event (primary, owned child or watched object)
        "requeue_after",  # Result(requeue_after=s)
        "requeue",  # Result(requeue=True), with backoff
        "error_backoff",  # a failed reconcile, with backoff
        "cancelled_backoff",  # a cancelled reconcile, with a capped backoff
        "sync_period",  # the periodic resync
        "manual",  # code asked (enqueue)
    }
)

# Every reconcile span has these; cancelled, failed and requeued ones add more
# (docs/contract.md).
RECONCILE_SPAN_ATTRIBUTES = frozenset(
    {
        "k8s.namespace.name",
        "wukong.object.name",
        "wukong.controller",
        "wukong.reconcile.deadline",
        "wukong.reconcile.timeout_ms",
        "wukong.reconcile.budget_remaining_ms",
        "wukong.reconcile.trigger",
        "wukong.reconcile.triggers",
        "wukong.reconcile.trigger_count",
    }
)


# Why a shard came to or left a replica (`wukong_shard_handoffs_total`).
SHARD_HANDOFF_REASONS = frozenset({"acquired", "rebalance", "lost", "shutdown"})


@dataclass(frozen=True)
class Family:
    """One metric family: its series name, type and label names."""

    name: str  # as queried: a counter's name ends in `_total`
    type: str
    labels: frozenset[str]
    reasons: frozenset[str] | None = None  # the values `reason` may take, when not cancel reasons


def _family(name: str, kind: str, *labels: str, reasons: frozenset[str] | None = None) -> Family:
    return Family(name, kind, frozenset(labels), reasons)


_QUEUE = ("name", "controller")

OPERATOR_FAMILIES = (
    # controller-runtime's, so dashboards written for kubebuilder operators work.
    _family("controller_runtime_reconcile_total", "counter", "controller", "result"),
    _family("controller_runtime_reconcile_errors_total", "counter", "controller"),
    _family("controller_runtime_reconcile_time_seconds", "histogram", "controller"),
    _family("controller_runtime_reconcile_timeouts_total", "counter", "controller"),
    _family("controller_runtime_terminal_reconcile_errors_total", "counter", "controller"),
    _family("controller_runtime_reconcile_panics_total", "counter", "controller"),
    _family("controller_runtime_webhook_panics_total", "counter"),
    _family("controller_runtime_conversion_webhook_panics_total", "counter"),
    _family("controller_runtime_active_workers", "gauge", "controller"),
    _family("controller_runtime_max_concurrent_reconciles", "gauge", "controller"),
    _family("workqueue_depth", "gauge", *_QUEUE, "priority"),
    _family("workqueue_adds_total", "counter", *_QUEUE),
    _family("workqueue_queue_duration_seconds", "histogram", *_QUEUE),
    _family("workqueue_work_duration_seconds", "histogram", *_QUEUE),
    _family("workqueue_retries_total", "counter", *_QUEUE),
    _family("workqueue_unfinished_work_seconds", "gauge", *_QUEUE),
    _family("workqueue_longest_running_processor_seconds", "gauge", *_QUEUE),
    # client-go's: `method` and `verb` both carry the HTTP method.
    _family("rest_client_requests_total", "counter", "code", "method", "host"),
    _family("rest_client_request_duration_seconds", "histogram", "verb", "host"),
    _family("leader_election_master_status", "gauge", "name"),
    _family("controller_runtime_webhook_requests_total", "counter", "webhook", "code"),
    _family("controller_runtime_webhook_latency_seconds", "histogram", "webhook"),
    _family("controller_runtime_webhook_requests_in_flight", "gauge", "webhook"),
    # Wukong's own.
    _family("wukong_reconcile_cancellations_total", "counter", "controller", "reason"),
    _family("wukong_reconcile_triggers_total", "counter", "controller", "trigger"),
    _family("wukong_top_namespace_reconciles_total", "counter", "controller", "object_namespace"),
    _family("wukong_requeue_delay_seconds", "histogram", "controller"),
    _family("wukong_reconcile_budget_used_ratio", "histogram", "controller"),
    _family("wukong_wukongset_replicas", "gauge", "object_namespace", "wukongset", "state"),
    _family("wukong_api_request_cancellations_total", "counter", "verb", "resource", "reason"),
    _family("wukong_shards_held", "gauge"),
    _family("wukong_shard_handoffs_total", "counter", "reason", reasons=SHARD_HANDOFF_REASONS),
    _family("wukong_shard_space_conflict", "gauge"),
)
AGENT_FAMILIES = (
    _family(
        "wukong_node_cancellations_total",
        "counter",
        *("node", "namespace", "pod", "container", "runtime", "reason"),
    ),
    _family(
        "wukong_node_events_lost_total",
        "counter",
        *("node", "runtime", "reason"),
        reasons=AGENT_LOSS_REASONS,
    ),
    _family(
        "wukong_node_untraced_processes_total",
        "counter",
        *("node", "runtime", "reason"),
        reasons=AGENT_UNTRACED_REASONS,
    ),
    _family("wukong_node_series_overflow_total", "counter", "node"),
)

# Labels that say which bucket or quantile a sample is, not which series.
_SAMPLE_LABELS = {"le", "quantile"}


def check_exposition(text: str, *, agent: bool = False, require_samples: bool = False) -> list[str]:
    """What in a Prometheus text exposition breaks the contract; empty when nothing does.

    Every contract family must be declared with its type; every sample's label
    names must be the family's (extra families are fine); a `reason` label must
    hold a cancel reason, a `trigger` label a trigger kind. With `require_samples`,
    a family without samples is a problem too (a labelled family shows none until
    its first event).
    """
    declared = {}
    for parsed in text_string_to_metric_families(text):
        labels = [frozenset(sample.labels) - _SAMPLE_LABELS for sample in parsed.samples]
        reasons = {
            sample.labels["reason"] for sample in parsed.samples if "reason" in sample.labels
        }
        triggers = {
            sample.labels["trigger"] for sample in parsed.samples if "trigger" in sample.labels
        }
        declared[parsed.name] = (parsed.type, labels, reasons, triggers)
    allowed_reasons = AGENT_CANCEL_REASONS if agent else CANCEL_REASONS
    problems = []
    for family in AGENT_FAMILIES if agent else OPERATOR_FAMILIES:
        # The parser names a counter's family without its `_total` (not a gauge's).
        found = declared.get(family.name) or declared.get(family.name.removesuffix("_total"))
        if found is None:
            problems.append(f"missing: {family.name} ({family.type})")
            continue
        kind, labels, reasons, triggers = found
        if kind != family.type:
            problems.append(f"{family.name}: type {kind}, the contract says {family.type}")
        if not labels and require_samples:
            problems.append(f"{family.name}: no samples")
        wrong = next((names for names in labels if names != family.labels), None)
        if wrong is not None:
            problems.append(
                f"{family.name}: labels {sorted(wrong)}, the contract says {sorted(family.labels)}"
            )
        allowed = family.reasons if family.reasons is not None else allowed_reasons
        if reasons - allowed:
            problems.append(
                f"{family.name}: reasons outside the contract: {sorted(reasons - allowed)}"
            )
        if triggers - RECONCILE_TRIGGERS:
            problems.append(
                f"{family.name}: triggers outside the contract: "
                f"{sorted(triggers - RECONCILE_TRIGGERS)}"
            )
    return problems


def _read(source: str) -> str:
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=10) as response:
            return str(response.read().decode())
    with open(source) as file:
        return file.read()


def main(argv: list[str]) -> int:
    sources = [arg for arg in argv if not arg.startswith("--")]
    if len(sources) != 1:
        print(__doc__)
        return 2
    problems = check_exposition(
        _read(sources[0]), agent="--agent" in argv, require_samples="--require-samples" in argv
    )
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problem(s)" if problems else "the exposition meets the contract")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
