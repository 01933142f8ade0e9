"""The drill's diagnosis rules, on hand-made trace summaries and panel readings."""

from collections import Counter

from wukong.demo.diagnosis import (
    HEALTHY,
    LEADER_LOST,
    ROLLING_RESTART,
    SLOW_API,
    TIGHT_DEADLINE,
    diagnose,
)
from wukong.demo.telemetry import PanelReading, TraceSummary


def _summary(cancellations: dict[str, int], api_p50_ms: float) -> TraceSummary:
    return TraceSummary(
        reconciles=10,
        cancellations=Counter(cancellations),
        api_calls=20,
        api_p50_ms=api_p50_ms,
        slowest_call="create persistentvolumeclaims",
        slowest_call_p50_ms=api_p50_ms,
        api_share=0.9,
    )


def _leader(value: float) -> list[PanelReading]:
    return [
        PanelReading(
            title="Leader election", expr="x", legend="{{name}}", series=[({"name": "w"}, value)]
        )
    ]


def test_each_cause() -> None:
    def cause(cancellations: dict[str, int], p50: float, leader: float = 1.0) -> str:
        return diagnose(
            _summary(cancellations, p50), baseline_api_p50_ms=8.0, leader_readings=_leader(leader)
        ).cause

    assert cause({"deadline_exceeded": 5}, 600.0) == SLOW_API
    assert cause({"api_timeout": 5}, 300.0) == SLOW_API
    assert cause({"deadline_exceeded": 50}, 12.0) == TIGHT_DEADLINE
    # Slower than usual, but under the floor: still the deadline's fault.
    assert cause({"deadline_exceeded": 50}, 45.0) == TIGHT_DEADLINE
    assert cause({"deadline_exceeded": 5, "leader_lost": 1}, 300.0) == LEADER_LOST
    assert cause({}, 9.0, leader=0.0) == LEADER_LOST
    assert cause({}, 9.0) == HEALTHY
    # Stopped replicas: no failure, even though their leader status went to 0.
    assert cause({"shutdown": 2}, 9.0) == ROLLING_RESTART
    assert cause({"shutdown": 2}, 9.0, leader=0.0) == ROLLING_RESTART
    # A shutdown during a real storm is not what to report.
    assert cause({"shutdown": 2, "deadline_exceeded": 9}, 12.0) == TIGHT_DEADLINE


def test_a_restart_reads_as_no_failure_with_its_count() -> None:
    def explanation(shutdown: int) -> str:
        summary = _summary({"shutdown": shutdown}, 9.0)
        return diagnose(summary, baseline_api_p50_ms=8.0, leader_readings=_leader(0.0)).explanation

    assert explanation(3).startswith("no failure: 3 reconciles cancelled for shutdown, ")
    assert explanation(1).startswith("no failure: 1 reconcile cancelled for shutdown, ")
