"""A noisy tenant: one namespace runs most of the reconciles while the queue backs up.

The rule on readings, its place among the other causes, and the signals it reads
from Prometheus (the top namespaces' reconciles, the queue's p99 wait)."""

import pytest

from tests.unit.test_diagnose_live import OPERATOR, StandIn, _sample, prometheus
from wukong.cli import main
from wukong.diagnose.live import Target, read_signals
from wukong.diagnose.prometheus import PrometheusAPI
from wukong.diagnose.rules import (
    HEALTHY,
    LEADER_LOST,
    NOISY_TENANT,
    ROLLING_RESTART,
    SLOW_API,
    TIGHT_DEADLINE,
    Signals,
    diagnose,
)

__all__ = ["prometheus"]  # the stand-in Prometheus fixture, used below

FLOODED = {"noisy": 900, "quiet": 60, "kube-system": 40}


def _signals(
    by_namespace: dict[str, int] = FLOODED,
    *,
    wait_ms: float = 4000.0,
    baseline_wait_ms: float = 3.0,
    cancellations: dict[str, int] | None = None,
    api_p50_ms: float = 5.0,
    leader_dropped: bool = False,
) -> Signals:
    return Signals(
        cancellations=cancellations or {},
        api_p50_ms=api_p50_ms,
        baseline_api_p50_ms=5.0,
        leader_dropped=leader_dropped,
        reconciles_by_namespace=by_namespace,
        queue_wait_p99_ms=wait_ms,
        baseline_queue_wait_p99_ms=baseline_wait_ms,
    )


def test_one_namespace_taking_the_workers_is_named_with_its_share() -> None:
    diagnosis = diagnose(_signals())
    assert diagnosis.cause == NOISY_TENANT
    assert not diagnosis.healthy
    assert diagnosis.explanation.startswith(
        "namespace noisy ran 90% of the reconciles (900 of 1000; next: quiet 6%) while the "
        "queue's p99 wait was 4000 ms against 3 ms when healthy: a noisy tenant"
    )
    assert "kubectl get events -n noisy" in diagnosis.explanation


@pytest.mark.parametrize(
    ("by_namespace", "why"),
    [
        ({"a": 400, "b": 350, "c": 250}, "no namespace has half the reconciles"),
        ({"a": 600, "b": 400}, "the next namespace has more than a third of the top one's"),
        ({"noisy": 30, "quiet": 2}, "too few reconciles to tell"),
        ({}, "no reconciles by namespace at all"),
    ],
)
def test_even_or_light_load_is_no_noisy_tenant(by_namespace: dict[str, int], why: str) -> None:
    assert diagnose(_signals(by_namespace)).cause == HEALTHY, why


def test_a_dominant_namespace_is_no_noisy_tenant_while_the_queue_keeps_up() -> None:
    # Five times the healthy p99 but under a second: keys are still handed out fast.
    assert diagnose(_signals(wait_ms=900.0, baseline_wait_ms=100.0)).cause == HEALTHY
    # Over a second, but the queue always waits that long here.
    assert diagnose(_signals(wait_ms=4000.0, baseline_wait_ms=1000.0)).cause == HEALTHY
    no_baseline = diagnose(_signals(wait_ms=1500.0, baseline_wait_ms=0.0))
    assert no_baseline.cause == NOISY_TENANT
    assert "against no healthy baseline, a 1000 ms floor" in no_baseline.explanation


def test_a_single_namespace_alone_is_named_when_it_backs_the_queue_up() -> None:
    alone = diagnose(_signals({"only": 500}))
    assert alone.cause == NOISY_TENANT
    assert "ran 100% of the reconciles (500 of 500) while" in alone.explanation


def test_a_single_namespace_alone_hitting_its_deadlines_is_a_tight_deadline() -> None:
    # Its queue waits on its own retries of reconciles cut short: nobody is crowded out.
    alone = diagnose(_signals({"only": 500}, cancellations={"deadline_exceeded": 200}))
    assert alone.cause == TIGHT_DEADLINE
    assert alone.explanation.startswith("200 reconciles hit their deadline")
    # With a neighbour crowded out, the tenant stays the cause and its deadlines the symptom.
    beside = _signals({"only": 500, "quiet": 10}, cancellations={"deadline_exceeded": 200})
    assert diagnose(beside).cause == NOISY_TENANT


def test_causes_that_make_a_namespace_look_noisy_come_first() -> None:
    # A slow API server makes every reconcile slow and queued.
    slow = _signals(cancellations={"deadline_exceeded": 20}, api_p50_ms=800.0)
    assert diagnose(slow).cause == SLOW_API
    assert diagnose(_signals(leader_dropped=True)).cause == LEADER_LOST
    # A restart reconciles every object once: the biggest namespace dominates.
    assert diagnose(_signals(cancellations={"shutdown": 3})).cause == ROLLING_RESTART


def test_a_noisy_tenant_comes_before_the_deadlines_it_makes_its_reconciles_hit() -> None:
    timed_out = {"deadline_exceeded": 20}
    assert diagnose(_signals(cancellations=timed_out)).cause == NOISY_TENANT
    even = {"a": 400, "b": 350, "c": 250}
    assert diagnose(_signals(even, cancellations=timed_out)).cause == TIGHT_DEADLINE


NOISY_ANSWERS = [
    (
        "wukong_top_namespace_reconciles_total",
        [_sample(912.4, object_namespace="noisy"), _sample(88, object_namespace="quiet")],
    ),
    ("quantile_over_time(0.1, (histogram_quantile(0.99", [_sample(0.004)]),
    ("histogram_quantile(0.99, sum by (le) (rate(workqueue_queue", [_sample(3.2)]),
    OPERATOR,
]


def test_the_tenant_signals_read_from_prometheus(prometheus: tuple[StandIn, str]) -> None:
    stand_in, url = prometheus
    stand_in.answers = NOISY_ANSWERS
    signals = read_signals(PrometheusAPI(url), Target(controller="wukong"), window="2m")
    assert dict(signals.reconciles_by_namespace) == {"noisy": 912, "quiet": 88}
    assert (signals.queue_wait_p99_ms, signals.baseline_queue_wait_p99_ms) == (3200, 4)
    (reconciles,) = [q for q in stand_in.queries if "top_namespace_reconciles" in q]
    assert 'controller=~"wukong"' in reconciles
    assert "increase(" in reconciles and "[2m]" in reconciles


def test_wukong_diagnose_prints_the_noisy_tenant_and_exits_1(
    prometheus: tuple[StandIn, str], capsys: pytest.CaptureFixture[str]
) -> None:
    stand_in, url = prometheus
    stand_in.answers = NOISY_ANSWERS
    code = main(["diagnose", f"--prometheus={url}", "--window=2m"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert out.startswith("diagnosis: noisy_tenant (last 2m)\n  why: namespace noisy ran 91% ")
    assert "  queue wait p99 3200 ms (healthy 4 ms)\n" in out
    assert "  reconciles by namespace: noisy 91%, quiet 9% (of 1000)\n" in out
    assert "  operator restarts: none\n  leader status: no drop seen\n" in out
