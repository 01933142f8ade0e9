"""The metric families Wukong exports, on a registry of their own.

Names and labels follow controller-runtime and client-go (`controller_runtime_*`,
`workqueue_*`, `rest_client_*`, `leader_election_*`) so that the dashboards and
alerts written for kubebuilder operators work unchanged; the `wukong_*`
families add what controller-runtime does not measure: why reconciles were
cancelled, what made them run (`wukong_reconcile_triggers_total`), how late a
`RequeueAfter` really ran, and how much of its deadline a reconcile used.

Every family lives on a dedicated `CollectorRegistry` (never the process-global
one), created by `create_metrics()`, together with the process, platform and
GC collectors. Tests create as many independent registries as they like.

Labels are bounded sets: controller and queue names, verbs, HTTP codes, cancel
reasons, trigger kinds. Object names and namespaces never become labels (one series per
object would grow without bound); exemplars and logs carry them instead. The
one exception is bounded by construction: `TopNamespaces` exports the
cancellation counts, and the reconcile counts, of only the `TOP_NAMESPACES`
namespaces cancelling (reconciling) the most right now, so an SRE sees which
tenant storms, or takes the workers, without a series per namespace on every
family.

Wukong has no conversion webhook (its one API version needs none), so
`controller_runtime_conversion_webhook_panics_total` is served and stays at 0:
controller-runtime serves it whether or not a conversion webhook exists, and
alerts summing panics across families keep working. Likewise controller-runtime's
certwatcher counters (`certwatcher_read_certificate_total` and
`certwatcher_read_certificate_errors_total`) are served from the start, at 0
until a certificate directory is read (`CertificateReadsCollector`).

Gauges that describe *current* state (queue depth, work in progress, active
workers) are not updated on every change: `ControllerStateCollector` reads them
from the tracked controllers at scrape time, so they can never drift.
"""

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from wukong.metrics.plain import PlainCounter, PlainHistogram
from wukong.metrics.sets import WukongSetReplicasCollector
from wukong.runtime.observe import ControllerView
from wukong.runtime.serving import CERTIFICATE_READS

# Reconcile durations: fine below a second, then far past the default 15 s
# deadline, so reconciles that hit (or overrun) their deadline are still
# resolved instead of all landing in +Inf.
RECONCILE_TIME_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
)  # fmt: skip
# Requeue lateness: a timer on an idle loop is ~1 ms late; a requeue stuck
# behind busy workers is seconds late.
REQUEUE_DELAY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# Fraction of the deadline used; 1.0 is the deadline itself.
BUDGET_RATIO_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.5, 2.0)
# controller-runtime's workqueue buckets: ExponentialBuckets(1e-8, 10, 12).
WORKQUEUE_BUCKETS = tuple(10.0**exponent for exponent in range(-8, 4))
# client-go's rest_client_request_duration_seconds buckets.
# controller-runtime's webhook latency buckets (prometheus.DefBuckets).
WEBHOOK_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REST_CLIENT_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)

_QUEUE_LABELS = ("name", "controller")
# How many namespaces `wukong_top_namespace_cancellations_total` (and
# `wukong_top_namespace_reconciles_total`) shows at once.
TOP_NAMESPACES = 10
# Ranking is by counts with this half-life (seconds): the namespaces cancelling
# (reconciling) most *now* lead, an old storm fades out of the top within minutes.
TOP_NAMESPACES_HALF_LIFE = 120.0
# Namespaces tracked at most (each a few numbers); the quietest are dropped first.
_TRACKED_NAMESPACES = 10_000


@dataclass(frozen=True, kw_only=True)
class OperatorMetrics:
    """The operator's metric families, all on `registry`."""

    registry: CollectorRegistry
    controllers: "ControllerStateCollector"
    namespace_cancellations: "TopNamespaces"
    namespace_reconciles: "TopNamespaces"
    wukongsets: WukongSetReplicasCollector
    reconcile_total: PlainCounter
    reconcile_errors: Counter
    terminal_reconcile_errors: Counter
    reconcile_panics: Counter
    reconcile_time: PlainHistogram
    reconcile_timeouts: Counter
    workqueue_adds: PlainCounter
    workqueue_queue_duration: PlainHistogram
    workqueue_work_duration: PlainHistogram
    workqueue_retries: Counter
    rest_client_requests: PlainCounter
    rest_client_request_duration: PlainHistogram
    leader_election_master_status: Gauge
    reconcile_cancellations: Counter
    reconcile_triggers: PlainCounter
    requeue_delay: PlainHistogram
    reconcile_budget_used: PlainHistogram
    api_request_cancellations: Counter
    observer_failures: Counter
    watch_restarts: Counter
    relists: Counter
    leader_standbys: Counter
    shards_held: Gauge
    shard_handoffs: Counter
    shard_client_filtering: Counter
    shard_space_conflict: Gauge
    webhook_requests: Counter
    webhook_latency: Histogram
    webhook_in_flight: Gauge
    webhook_decisions: Counter
    webhook_panics: Counter
    conversion_webhook_panics: Counter


class ControllerStateCollector(Collector):
    """Current state of the tracked controllers and their queues, read at scrape time.

    Runs on the scraping thread: the metrics server calls the registry on the
    event loop, which is what makes reading the queues' plain dicts safe.
    """

    def __init__(self) -> None:
        self._controllers: dict[str, ControllerView] = {}

    def track(self, controller: ControllerView) -> None:
        self._controllers[controller.name] = controller

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "workqueue_depth",
            "Current depth of workqueue by workqueue and priority",
            labels=(*_QUEUE_LABELS, "priority"),
        )
        unfinished = GaugeMetricFamily(
            "workqueue_unfinished_work_seconds",
            "How many seconds of work has been done that is in progress and hasn't been "
            "observed by work_duration. Large values indicate stuck threads.",
            labels=_QUEUE_LABELS,
        )
        longest = GaugeMetricFamily(
            "workqueue_longest_running_processor_seconds",
            "How many seconds has the longest running processor for workqueue been running.",
            labels=_QUEUE_LABELS,
        )
        active = GaugeMetricFamily(
            "controller_runtime_active_workers",
            "Number of currently used workers per controller",
            labels=("controller",),
        )
        maximum = GaugeMetricFamily(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller",
            labels=("controller",),
        )
        for name, controller in sorted(self._controllers.items()):
            # A controller's queue is named after it, as in controller-runtime.
            running = controller.processing_seconds()
            # Keys have no priority: "", as controller-runtime's queue without priorities.
            depth.add_metric([name, name, ""], controller.queue_depth())
            unfinished.add_metric([name, name], sum(running))
            longest.add_metric([name, name], max(running, default=0.0))
            active.add_metric([name], controller.active_workers)
            maximum.add_metric([name], controller.max_concurrent_reconciles)
        yield from (depth, unfinished, longest, active, maximum)


@dataclass
class _Tally:
    total: int  # events since tracking began
    weight: float  # each event's weight summed, for ranking (see TopNamespaces)


class CertificateReadsCollector(Collector):
    """controller-runtime's certwatcher counters, read from `CERTIFICATE_READS` at scrape time.

    The reads are counted where they happen, process-wide (the metrics
    endpoint's certificate is read on its own thread), as controller-runtime's
    are; every registry shows the same counts.
    """

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "certwatcher_read_certificate_total",
            "Total number of certificate reads",
            value=CERTIFICATE_READS.total,
        )
        yield CounterMetricFamily(
            "certwatcher_read_certificate_errors_total",
            "Total number of certificate read errors",
            value=CERTIFICATE_READS.errors,
        )


class TopNamespaces(Collector):
    """A count of events (cancelled reconciles, reconciles) per (controller, object
    namespace), exported as the counter `name` for the top `top` namespaces only,
    ranked by recent events (a decayed count).

    Each exported series is a counter (events since the namespace was first
    tracked), so `topk(5, rate(...))` reads as usual; a namespace that drops out
    of the top and comes back continues its count. Read at scrape time.

    The decay is forward: an event weighs `exp(decay * (t - origin))`, so every
    tally's decayed count at any time is its summed weight times one common
    factor, and weights rank as the decayed counts do. Recording adds one
    weight (no tally is decayed on the reconcile's path); the origin moves up
    before the weights could overflow.
    """

    def __init__(
        self,
        name: str,
        counted: str,
        *,
        top: int = TOP_NAMESPACES,
        half_life: float = TOP_NAMESPACES_HALF_LIFE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.counted = counted  # what is counted, for the help text
        self.top = top
        self._decay = math.log(2) / half_life
        # Weights grow 2x a half-life: rebased after 256 of them (2**256, far from
        # a float's limit of about 2**1024).
        self._rebase_after = 256 * half_life
        self._clock = clock
        self._origin = clock()
        self._tallies: dict[tuple[str, str], _Tally] = {}

    def _rebase(self, now: float) -> None:
        """Move the origin to `now`, the weights scaled to it (their order kept)."""
        scale = math.exp(-self._decay * (now - self._origin))
        for tally in self._tallies.values():
            tally.weight *= scale
        self._origin = now

    def record(self, controller: str, namespace: str, now: float | None = None) -> None:
        """Count an event of `controller` in `namespace`; `now`: the clock's time, when
        the caller has just read it (on the same clock)."""
        if now is None:
            now = self._clock()
        if now - self._origin > self._rebase_after:
            self._rebase(now)
        weight = math.exp(self._decay * (now - self._origin))
        key = (controller, namespace)
        tally = self._tallies.get(key)
        if tally is None:
            if len(self._tallies) >= _TRACKED_NAMESPACES:
                quietest = min(self._tallies, key=lambda k: self._tallies[k].weight)
                del self._tallies[quietest]
            self._tallies[key] = _Tally(total=1, weight=weight)
            return
        tally.total += 1
        tally.weight += weight

    def leaders(self) -> list[tuple[str, str, int]]:
        """(controller, namespace, total) of the top namespaces, most events first."""
        ranked = sorted(self._tallies.items(), key=lambda item: -item[1].weight)
        return [(c, ns, tally.total) for (c, ns), tally in ranked[: self.top]]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            self.name,
            f"{self.counted.capitalize()} in the (at most {self.top}) namespaces of reconciled "
            f"objects with the most {self.counted} recently; other namespaces are not exported",
            labels=("controller", "object_namespace"),
        )
        for controller, namespace, total in self.leaders():
            family.add_metric([controller, namespace], total)
        yield family


def create_metrics() -> OperatorMetrics:
    """A fresh registry with every family of the metrics contract registered on it."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    if GC_COLLECTOR is not None:
        GCCollector(registry=registry)
    controllers = ControllerStateCollector()
    registry.register(controllers)
    namespace_cancellations = TopNamespaces(
        "wukong_top_namespace_cancellations", "reconcile cancellations"
    )
    registry.register(namespace_cancellations)
    namespace_reconciles = TopNamespaces("wukong_top_namespace_reconciles", "reconciles")
    registry.register(namespace_reconciles)
    registry.register(CertificateReadsCollector())
    wukongsets = WukongSetReplicasCollector()
    registry.register(wukongsets)
    controller = ("controller",)
    return OperatorMetrics(
        registry=registry,
        controllers=controllers,
        namespace_cancellations=namespace_cancellations,
        namespace_reconciles=namespace_reconciles,
        wukongsets=wukongsets,
        reconcile_total=PlainCounter(
            "controller_runtime_reconcile_total",
            "Total number of reconciliations per controller",
            labelnames=("controller", "result"),
            registry=registry,
        ),
        reconcile_errors=Counter(
            "controller_runtime_reconcile_errors_total",
            "Total number of reconciliation errors per controller",
            labelnames=controller,
            registry=registry,
        ),
        terminal_reconcile_errors=Counter(
            "controller_runtime_terminal_reconcile_errors_total",
            "Total number of terminal reconciliation errors per controller",
            labelnames=controller,
            registry=registry,
        ),
        reconcile_panics=Counter(
            "controller_runtime_reconcile_panics_total",
            "Total number of reconciliation panics per controller",
            labelnames=controller,
            registry=registry,
        ),
        reconcile_time=PlainHistogram(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            labelnames=controller,
            buckets=RECONCILE_TIME_BUCKETS,
            registry=registry,
        ),
        reconcile_timeouts=Counter(
            "controller_runtime_reconcile_timeouts_total",
            "Total number of reconciliation timeouts per controller",
            labelnames=controller,
            registry=registry,
        ),
        workqueue_adds=PlainCounter(
            "workqueue_adds_total",
            "Total number of adds handled by workqueue",
            labelnames=_QUEUE_LABELS,
            registry=registry,
        ),
        workqueue_queue_duration=PlainHistogram(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            labelnames=_QUEUE_LABELS,
            buckets=WORKQUEUE_BUCKETS,
            registry=registry,
        ),
        workqueue_work_duration=PlainHistogram(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes",
            labelnames=_QUEUE_LABELS,
            buckets=WORKQUEUE_BUCKETS,
            registry=registry,
        ),
        workqueue_retries=Counter(
            "workqueue_retries_total",
            "Total number of retries handled by workqueue",
            labelnames=_QUEUE_LABELS,
            registry=registry,
        ),
        rest_client_requests=PlainCounter(
            "rest_client_requests_total",
            "Number of HTTP requests, partitioned by status code, method, and host",
            labelnames=("code", "method", "host"),
            registry=registry,
        ),
        rest_client_request_duration=PlainHistogram(
            "rest_client_request_duration_seconds",
            "Request latency in seconds, broken down by verb and host",
            labelnames=("verb", "host"),
            buckets=REST_CLIENT_BUCKETS,
            registry=registry,
        ),
        leader_election_master_status=Gauge(
            "leader_election_master_status",
            "Whether this process leads (1) or not (0), per Lease name",
            labelnames=("name",),
            registry=registry,
        ),
        reconcile_cancellations=Counter(
            "wukong_reconcile_cancellations_total",
            "Reconciles cancelled before they finished, by cancel reason",
            labelnames=("controller", "reason"),
            registry=registry,
        ),
        reconcile_triggers=PlainCounter(
            "wukong_reconcile_triggers_total",
            "What put reconciled keys in the queue, by trigger kind (event, requeue_after, "
            "requeue, error_backoff, cancelled_backoff, sync_period, manual); adds coalesced "
            "into one reconcile count one each",
            labelnames=("controller", "trigger"),
            registry=registry,
        ),
        requeue_delay=PlainHistogram(
            "wukong_requeue_delay_seconds",
            "How late a requeued reconcile started: actual start minus the time it was due",
            labelnames=controller,
            buckets=REQUEUE_DELAY_BUCKETS,
            registry=registry,
        ),
        reconcile_budget_used=PlainHistogram(
            "wukong_reconcile_budget_used_ratio",
            "Fraction of its deadline a reconcile used (elapsed / timeout)",
            labelnames=controller,
            buckets=BUDGET_RATIO_BUCKETS,
            registry=registry,
        ),
        api_request_cancellations=Counter(
            "wukong_api_request_cancellations_total",
            "API requests that ended without an answer, by cancel reason",
            labelnames=("verb", "resource", "reason"),
            registry=registry,
        ),
        watch_restarts=Counter(
            "wukong_watch_restarts_total",
            "Informer watches that ended and started again, by resource and cause "
            "(expired: normal; gone, timeout, error: something to look at)",
            labelnames=("resource", "cause"),
            registry=registry,
        ),
        relists=Counter(
            "wukong_informer_relists_total",
            "Full lists an informer had to make again after its first, by resource and cause",
            labelnames=("resource", "cause"),
            registry=registry,
        ),
        leader_standbys=Counter(
            "wukong_leader_standbys_total",
            "Times this replica lost the Lease and stood by instead of exiting, by Lease name",
            labelnames=("name",),
            registry=registry,
        ),
        shards_held=Gauge(
            "wukong_shards_held",
            "Shards this replica holds now (active-active: --shards; 0 when off or none)",
            registry=registry,
        ),
        shard_handoffs=Counter(
            "wukong_shard_handoffs_total",
            "Shards that came to or left this replica, by reason (acquired; rebalance: given "
            "to a replica that joined; lost: its Lease was not renewed in time or was taken; "
            "shutdown)",
            labelnames=("reason",),
            registry=registry,
        ),
        shard_client_filtering=Counter(
            "wukong_shard_client_filtering_total",
            "Informers whose shardSelector the API server ignored or refused, so they list "
            "and watch everything and keep their shards on this side, by resource",
            labelnames=("resource",),
            registry=registry,
        ),
        shard_space_conflict=Gauge(
            "wukong_shard_space_conflict",
            "1 while live replicas of another shard space (another --shards or --shard-by, "
            "or sharding on against off, as in a rollout changing them) keep this replica "
            "from taking shards or leading; it waits, holding nothing, until they are gone",
            registry=registry,
        ),
        webhook_requests=Counter(
            "controller_runtime_webhook_requests_total",
            "Total number of admission requests by HTTP status code.",
            labelnames=("webhook", "code"),
            registry=registry,
        ),
        webhook_latency=Histogram(
            "controller_runtime_webhook_latency_seconds",
            "Histogram of the latency of processing admission requests",
            labelnames=("webhook",),
            buckets=WEBHOOK_LATENCY_BUCKETS,
            registry=registry,
        ),
        webhook_in_flight=Gauge(
            "controller_runtime_webhook_requests_in_flight",
            "Current number of admission requests being served.",
            labelnames=("webhook",),
            registry=registry,
        ),
        webhook_decisions=Counter(
            "wukong_webhook_decisions_total",
            "Admission requests answered, by webhook, decision (allowed: true/false) and reason "
            "(Allowed, a rejection's reason, Errored, Unverified, or Malformed: no review)",
            labelnames=("webhook", "allowed", "reason"),
            registry=registry,
        ),
        webhook_panics=Counter(
            "controller_runtime_webhook_panics_total",
            "Total number of webhook panics",
            registry=registry,
        ),
        conversion_webhook_panics=Counter(
            "controller_runtime_conversion_webhook_panics_total",
            "Total number of conversion webhook panics",
            registry=registry,
        ),
        observer_failures=Counter(
            "wukong_observer_failures_total",
            "Times a runtime observer raised (contained: the runtime went on), by observer",
            labelnames=("observer",),
            registry=registry,
        ),
    )


def metrics_auth_requests(registry: CollectorRegistry) -> Counter:
    """`wukong_metrics_auth_requests_total{code,via}` on `registry`: requests to a secure
    /metrics, by answer (200, 401, 403, 429, 500) and by what answered: `cache`, `review`
    (its own TokenReview), `shared` (another request's), `none` (no token, or the review
    bucket was empty; see `wukong.runtime.serving.DelegatedAuth`). The server that checks
    the callers registers it on the registry it serves."""
    return Counter(
        "wukong_metrics_auth_requests_total",
        "Requests to a secure /metrics endpoint, by HTTP code and by what answered "
        "(cache, review, shared, none)",
        labelnames=("code", "via"),
        registry=registry,
    )
