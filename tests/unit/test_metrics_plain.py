"""Plain counter and histogram families expose what prometheus_client's would."""

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import choose_encoder

from wukong.metrics.plain import PlainCounter, PlainHistogram

BUCKETS = (0.005, 0.01, 0.1, 1.0, 10.0)
AMOUNTS = (0.0, 0.005, 0.0051, 0.07, 0.1, 3.0, 10.0, 11.0, 1e9, math.inf, -1.0, math.nan)


def _exposed(registry: CollectorRegistry) -> tuple[str, str]:
    openmetrics, _ = choose_encoder("application/openmetrics-text")
    return generate_latest(registry).decode(), openmetrics(registry).decode()


def _frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    # `_created` and exemplar timestamps: the same on both sides.
    monkeypatch.setattr("time.time", lambda: 1_700_000_000.0)


def test_a_counter_is_exposed_as_prometheus_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    _frozen_clock(monkeypatch)
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Counter("x_requests_total", "Requests.", ("code", "method"), registry=theirs)
    plain = PlainCounter("x_requests_total", "Requests.", ("code", "method"), registry=ours)
    for family in (reference, plain):
        family.labels("200", "GET").inc()
        family.labels("200", "GET").inc(2.5)
        family.labels("404", "GET")  # made at 0
    assert _exposed(ours) == _exposed(theirs)
    with pytest.raises(ValueError, match="non-negative"):
        plain.labels("200", "GET").inc(-1)
    with pytest.raises(ValueError, match="label values"):
        plain.labels("200")


@pytest.mark.parametrize("created", [True, False])
def test_a_histogram_is_exposed_as_prometheus_clients(
    monkeypatch: pytest.MonkeyPatch, created: bool
) -> None:
    _frozen_clock(monkeypatch)
    monkeypatch.setattr("prometheus_client.metrics._use_created", created)
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    labels = ("controller",)
    reference = Histogram("x_seconds", "Durations.", labels, buckets=BUCKETS, registry=theirs)
    plain = PlainHistogram("x_seconds", "Durations.", labels, buckets=BUCKETS, registry=ours)
    assert plain.upper_bounds == [*BUCKETS, math.inf]
    reference.labels("idle")
    plain.labels("idle")
    trace = {"trace_id": "0af7651916cd43dd8448eb211c80319c"}
    for amount in AMOUNTS:
        reference.labels("busy").observe(amount, trace if amount == 0.07 else None)
        index = plain.labels("busy").observe(amount)
        if amount == 0.07:
            plain.labels("busy").set_exemplar(index, trace, amount)
    text, openmetrics = _exposed(ours)
    assert (text, openmetrics) == _exposed(theirs)
    assert f'# {{trace_id="{trace["trace_id"]}"}} 0.07' in openmetrics
    assert ('_created{controller="busy"}' in text) is created


def test_the_bucket_is_the_first_bound_at_or_above() -> None:
    family = PlainHistogram("x", "Durations.", (), buckets=BUCKETS, registry=CollectorRegistry())
    series = family.labels()
    indexes = [series.observe(amount) for amount in (0.005, 0.0051, 10.0, 11.0, math.nan)]
    assert indexes == [0, 1, 4, 5, -1]
    assert series.counts == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
