"""Counter and histogram families kept as plain numbers, exposed at scrape time.

The families fed on every reconcile (its result, triggers, durations, the work
queue's adds and waits, each API call) are written several times a reconcile.
prometheus_client's `Counter.inc` and `Histogram.observe` check their arguments
and take a lock each time, and a histogram looks for its bucket with a Python
loop: most of what metrics cost a reconcile (bench/RESULTS.md). `PlainCounter`
and `PlainHistogram` keep a float per series (per bucket) instead, found with
`bisect`, and make the family prometheus_client would have exposed, sample for
sample, when the registry is collected: the same name, type, help, label names,
`_created` series (unless prometheus_client's are turned off), cumulative
`le` buckets with `+Inf`, `_count`, `_sum` and exemplars.

No lock: they are written on the event loop only (observers run there) and read
there too (`MetricsServer` collects its registry on the loop), so a write and a
scrape never interleave. Were a registry read from another thread, each number
is still read whole, and a histogram's `_count` is the sum of the buckets read,
as prometheus_client's is: at most `_sum` is one observation apart from them.
"""

import math
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import prometheus_client.metrics
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar, Sample
from prometheus_client.utils import floatToGoString

# How often a histogram bucket's exemplar is renewed, at most (seconds).
EXEMPLAR_INTERVAL = 1.0


def _created_series() -> bool:
    """Whether counters and histograms expose `_created`: prometheus_client's own switch
    (`PROMETHEUS_DISABLE_CREATED_SERIES`, `disable_created_metrics()`), read at scrape time."""
    return bool(getattr(prometheus_client.metrics, "_use_created", True))


class _Family(Collector):
    """What a counter and a histogram family share: name, help, labels, children."""

    _type = ""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._documentation = documentation
        # Named as prometheus_client's families name theirs (the contract tests read it).
        self._labelnames = tuple(labelnames)
        registry.register(self)

    def _check(self, values: tuple[str, ...]) -> tuple[str, ...]:
        if len(values) != len(self._labelnames):
            raise ValueError(f"{self._name}: label values {values} for {self._labelnames}")
        return tuple(str(value) for value in values)

    def _metric(self) -> Metric:
        return Metric(self._name, self._documentation, self._type)

    def describe(self) -> Iterable[Metric]:
        return [self._metric()]


class CounterSeries:
    """One series of a `PlainCounter`."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount


class PlainCounter(_Family):
    """A counter family (`name` with or without `_total`), as prometheus_client's
    `Counter(name, documentation, labelnames, registry=registry)` exposes it."""

    _type = "counter"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        registry: CollectorRegistry,
    ) -> None:
        super().__init__(name.removesuffix("_total"), documentation, labelnames, registry)
        self._series: dict[tuple[str, ...], CounterSeries] = {}
        self._values: dict[tuple[str, ...], tuple[str, ...]] = {}

    def labels(self, *values: str) -> CounterSeries:
        """The series of `values` (made at 0 the first time, as `Counter.labels`)."""
        series = self._series.get(values)
        if series is None:
            self._values[values] = self._check(values)
            series = self._series[values] = CounterSeries()
        return series

    def collect(self) -> Iterator[Metric]:
        metric = self._metric()
        created = _created_series()
        total, created_name = f"{self._name}_total", f"{self._name}_created"
        samples = metric.samples
        for key, series in list(self._series.items()):
            labels = dict(zip(self._labelnames, self._values[key], strict=True))
            samples.append(Sample(total, labels, series.value, None, None))
            if created:
                samples.append(Sample(created_name, dict(labels), series.created, None, None))
        yield metric


class HistogramSeries:
    """One series of a `PlainHistogram`: a count per bucket (not cumulative), the sum,
    and each bucket's exemplar with the monotonic time it may be renewed."""

    __slots__ = ("_bounds", "counts", "created", "exemplar_due", "exemplars", "sum")

    def __init__(self, bounds: list[float]) -> None:
        self._bounds = bounds
        self.counts = [0.0] * len(bounds)
        self.sum = 0.0
        self.exemplars: list[Exemplar | None] = [None] * len(bounds)
        self.exemplar_due = [-math.inf] * len(bounds)
        self.created = time.time()

    def observe(self, amount: float, span: Any = None, now: float = 0.0) -> int:
        """Count `amount`; the index of its bucket (-1 for NaN, which no bucket counts).

        With `span`, the OpenTelemetry span of what was measured (an invalid one
        gives none), its trace as the bucket's exemplar when the bucket's is older
        than `EXEMPLAR_INTERVAL` at `now` (monotonic seconds) or it has none.
        Prometheus keeps one exemplar a bucket, the latest, and reads it once a
        scrape: the ones set in between are never seen. Making each (the span's
        context read, its trace id formatted) was a large part of what metrics
        cost a traced reconcile (bench/RESULTS.md): a bucket is renewed at most
        once an interval, and a rarely hit bucket (the slow reconciles') gets
        the trace of each observation it has.
        """
        self.sum += amount
        if amount != amount:  # NaN, as math.isnan (a call less); as prometheus_client: no bucket
            return -1
        index = bisect_left(self._bounds, amount)  # the first bound >= amount; +Inf is last
        self.counts[index] += 1.0
        if span is not None and now >= self.exemplar_due[index]:
            ids = span.get_span_context()
            if ids.is_valid:
                self.set_exemplar(index, {"trace_id": f"{ids.trace_id:032x}"}, amount)
        return index

    def set_exemplar(self, index: int, labels: dict[str, str], amount: float) -> None:
        """`labels` (a trace id) as bucket `index`'s exemplar, for `amount` observed now."""
        self.exemplars[index] = Exemplar(labels, amount, time.time())
        self.exemplar_due[index] = time.monotonic() + EXEMPLAR_INTERVAL


class PlainHistogram(_Family):
    """A histogram family with `buckets` (+Inf added), as prometheus_client's
    `Histogram(name, documentation, labelnames, buckets=buckets, registry=registry)`
    exposes it."""

    _type = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        bounds = [float(bound) for bound in buckets]
        if bounds != sorted(bounds):
            raise ValueError("Buckets not in sorted order")
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self._bounds = bounds
        self._le: list[str] = [floatToGoString(bound) for bound in bounds]  # type: ignore[no-untyped-call]
        super().__init__(name, documentation, labelnames, registry)
        self._series: dict[tuple[str, ...], HistogramSeries] = {}
        self._values: dict[tuple[str, ...], tuple[str, ...]] = {}

    @property
    def upper_bounds(self) -> list[float]:
        """The buckets' bounds, +Inf last."""
        return list(self._bounds)

    def labels(self, *values: str) -> HistogramSeries:
        """The series of `values` (made empty the first time, as `Histogram.labels`)."""
        series = self._series.get(values)
        if series is None:
            self._values[values] = self._check(values)
            series = self._series[values] = HistogramSeries(self._bounds)
        return series

    def collect(self) -> Iterator[Metric]:
        metric = self._metric()
        created = _created_series()
        name = self._name
        samples = metric.samples
        for key, series in list(self._series.items()):
            labels = dict(zip(self._labelnames, self._values[key], strict=True))
            cumulative = 0.0
            for le, count, exemplar in zip(
                self._le, list(series.counts), list(series.exemplars), strict=True
            ):
                cumulative += count
                bucket = {**labels, "le": le}
                samples.append(Sample(f"{name}_bucket", bucket, cumulative, None, exemplar))
            samples.append(Sample(f"{name}_count", dict(labels), cumulative, None, None))
            if self._bounds[0] >= 0:  # as prometheus_client: no sum of negative amounts
                samples.append(Sample(f"{name}_sum", dict(labels), series.sum, None, None))
            if created:
                samples.append(Sample(f"{name}_created", dict(labels), series.created, None, None))
        yield metric
