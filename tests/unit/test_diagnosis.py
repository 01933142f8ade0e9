"""The diagnosis rules (`wukong.diagnose.rules`), on hand-made signals; the drill's
trace summaries turned into signals."""

from collections import Counter

from wukong.demo.telemetry import TraceSummary
from wukong.diagnose.panels import PanelReading, leader_dropped
from wukong.diagnose.report import Report
from wukong.diagnose.rules import (
    CRASH_LOOP,
    HEALTHY,
    LEADER_LOST,
    ROLLING_RESTART,
    SLOW_API,
    TIGHT_DEADLINE,
    Signals,
    diagnose,
)


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
        signals = _summary(cancellations, p50).signals(
            baseline_api_p50_ms=8.0, leader_dropped=leader_dropped(_leader(leader))
        )
        return diagnose(signals).cause

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
        signals = _summary({"shutdown": shutdown}, 9.0).signals(
            baseline_api_p50_ms=8.0, leader_dropped=True
        )
        return diagnose(signals).explanation

    assert explanation(3).startswith("no failure: 3 reconciles cancelled for shutdown, ")
    assert explanation(1).startswith("no failure: 1 reconcile cancelled for shutdown, ")


def test_crash_loop_is_named_before_what_its_restarts_cause() -> None:
    def signals(restarts: dict[str, int]) -> Signals:
        return Signals(
            cancellations={"leader_lost": 2, "shutdown": 1},
            api_p50_ms=5.0,
            baseline_api_p50_ms=5.0,
            leader_dropped=True,
            restarts=restarts,
        )

    looping = diagnose(signals({"wukong-0": 3, "wukong-1": 1}))
    assert looping.cause == CRASH_LOOP
    assert "wukong-0 x3" in looping.explanation
    assert "wukong-1" not in looping.explanation
    assert not looping.healthy
    # One restart is what a lost Lease or a rollout does, not a loop.
    assert diagnose(signals({"wukong-0": 1})).cause == LEADER_LOST


def test_without_a_baseline_the_floor_decides() -> None:
    def signals(p50: float) -> Signals:
        return Signals(
            cancellations={"deadline_exceeded": 4}, api_p50_ms=p50, baseline_api_p50_ms=0.0
        )

    slow = diagnose(signals(600.0))
    assert slow.cause == SLOW_API
    assert "no healthy baseline, a 50 ms floor" in slow.explanation
    assert diagnose(signals(10.0)).cause == TIGHT_DEADLINE
    assert diagnose(Signals(cancellations={}, api_p50_ms=1, baseline_api_p50_ms=1)).healthy


def test_the_report_shows_process_starts_and_the_leader_status_whatever_the_cause() -> None:
    # One start each is no crash loop (healthy here), yet the report names them.
    quiet = {"cancellations": {}, "api_p50_ms": 3.0, "baseline_api_p50_ms": 3.0}
    signals = Signals(**quiet, restarts={"wukong-b": 1, "wukong-a": 1})
    report = Report(
        diagnosis=diagnose(signals), signals=signals, panels=[], alerts=[], calls=[], window="5m"
    )
    lines = report.render().splitlines()
    assert lines[0] == f"diagnosis: {HEALTHY} (last 5m)"
    assert "  operator restarts: wukong-a x1, wukong-b x1" in lines
    assert "  leader status: no drop seen" in lines
    dropped = Signals(**quiet, restarts={"wukong-a": 1}, leader_dropped=True)
    report = Report(
        diagnosis=diagnose(dropped), signals=dropped, panels=[], alerts=[], calls=[], window="5m"
    )
    assert "  leader status: a replica's dropped to 0" in report.render().splitlines()
