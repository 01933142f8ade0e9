"""`wukong_wukongset_replicas`: each WukongSet's members by state, read at scrape time.

The WukongSet controller tracks a source that lists, from its cache, every
set with its counts: `desired` (spec.replicas) and, from the status the
controller last wrote, `current`, `ready`, `available`, `updated` and
`migrating`. Read at scrape time like the controllers' queue gauges, so a
deleted set's series go with it and nothing can drift.

The set's namespace and name are labels (`object_namespace`, `wukongset`,
`object_` as for `wukong_top_namespace_cancellations_total`: `namespace` is
the operator pod's target label). One series per set and state: bounded by the
number of WukongSets, which are fleets, as kube-state-metrics keeps one
`kube_deployment_status_replicas` series per Deployment.
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

FAMILY = "wukong_wukongset_replicas"
LABELS = ("object_namespace", "wukongset", "state")
STATES = ("desired", "current", "ready", "available", "updated", "migrating")


@dataclass(frozen=True)
class SetReplicas:
    """One WukongSet's counts, by state (`STATES`)."""

    namespace: str
    name: str
    counts: dict[str, int]


SetSource = Callable[[], Iterable[SetReplicas]]


class WukongSetReplicasCollector(Collector):
    """Serves `FAMILY` from the sources tracked (the family is served, empty, from the start)."""

    def __init__(self) -> None:
        self._sources: list[SetSource] = []

    def track(self, source: SetSource) -> None:
        self._sources.append(source)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            FAMILY,
            "Members of each WukongSet by state: desired (spec.replicas), current, ready, "
            "available, updated and migrating",
            labels=LABELS,
        )
        for source in self._sources:
            for one in source():
                for state in STATES:
                    family.add_metric([one.namespace, one.name, state], one.counts.get(state, 0))
        yield family
