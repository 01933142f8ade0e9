"""Naming the cause of a cancel storm from telemetry alone.

The rules are the ones an SRE applies to the cancel-storm dashboard and the
traces behind it:

- reconciles cancelled with `leader_lost`, or the leader status gone: the
  replica lost its Lease (a partition, a paused process, a stolen Lease);
- reconciles cancelled at their deadline while API calls take several times
  their usual latency: the API server (or the path to it) is slow;
- reconciles cancelled at their deadline while API calls are as fast as
  usual: the deadline is too tight for the work a reconcile has to do;
- reconciles cancelled only for `shutdown`: a rollout or a restart, which is
  no failure at all (nothing timed out, nothing needs fixing).
"""

from dataclasses import dataclass

from wukong.demo.telemetry import PanelReading, TraceSummary

SLOW_API = "slow_api_server"
TIGHT_DEADLINE = "deadline_too_tight"
LEADER_LOST = "leader_lost"
ROLLING_RESTART = "rolling_restart"
HEALTHY = "healthy"

# API calls this many times slower than the healthy baseline (and at least
# SLOW_API_FLOOR_MS) mean the API is the problem, not the deadline.
SLOW_API_FACTOR = 5.0
SLOW_API_FLOOR_MS = 50.0


@dataclass(frozen=True)
class Diagnosis:
    cause: str
    explanation: str


def diagnose(
    traces: TraceSummary, *, baseline_api_p50_ms: float, leader_readings: list[PanelReading]
) -> Diagnosis:
    leader_lost = traces.cancellations.get("leader_lost", 0)
    shutdown = traces.cancellations.get("shutdown", 0)
    timed_out = traces.cancellations.get("deadline_exceeded", 0) + traces.cancellations.get(
        "api_timeout", 0
    )
    if shutdown and not (leader_lost or timed_out):
        # A replica stopping hands its Lease over on purpose: its leader status
        # drops to 0 too, which is no loss.
        return Diagnosis(
            ROLLING_RESTART,
            f"no failure: {_reconciles(shutdown)} cancelled for shutdown, none timed out or "
            "lost the Lease; a restart or rollout, requeued by the next replica",
        )
    leader_down = any(value == 0 for reading in leader_readings for _, value in reading.series)
    if leader_lost or leader_down:
        return Diagnosis(
            LEADER_LOST,
            f"{_reconciles(leader_lost)} cancelled with leader_lost"
            + ("; leader_election_master_status is 0" if leader_down else "")
            + ": this replica lost its Lease and stopped reconciling",
        )
    if not timed_out:
        return Diagnosis(HEALTHY, "no reconcile was cut short by a deadline")
    slow_threshold = max(SLOW_API_FLOOR_MS, SLOW_API_FACTOR * baseline_api_p50_ms)
    if traces.api_p50_ms >= slow_threshold:
        return Diagnosis(
            SLOW_API,
            f"{_reconciles(timed_out)} hit their deadline while API calls took "
            f"p50 {traces.api_p50_ms:.0f} ms against {baseline_api_p50_ms:.0f} ms when "
            f"healthy; slowest: {traces.slowest_call} "
            f"(p50 {traces.slowest_call_p50_ms:.0f} ms): the API server is slow",
        )
    return Diagnosis(
        TIGHT_DEADLINE,
        f"{_reconciles(timed_out)} hit their deadline while API calls were as fast as "
        f"usual (p50 {traces.api_p50_ms:.0f} ms, healthy {baseline_api_p50_ms:.0f} ms): "
        "the deadline is too tight for the work of one reconcile; raise --reconcile-timeout",
    )


def _reconciles(count: int) -> str:
    """ "1 reconcile", "3 reconciles": the report reads as a sentence."""
    return f"{count} reconcile" if count == 1 else f"{count} reconciles"
