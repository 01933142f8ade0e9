"""The rules that name the cause of an incident: a cancel storm, a noisy tenant.

They are the ones an SRE applies to the cancel-storm dashboard and the traces
behind it, in this order (the first that matches wins):

- a replica's process started again and again within the window: the
  operator is crash-looping;
- reconciles cancelled only for `shutdown`: a rollout or a restart, which is
  no failure at all (nothing timed out, nothing needs fixing);
- reconciles cancelled with `leader_lost`, or a replica's leader status
  dropped: the replica lost its Lease (a partition, a paused process, a
  stolen Lease);
- reconciles cancelled at their deadline while API calls take several times
  their usual latency: the API server (or the path to it) is slow;
- one namespace ran most of the reconciles (at least half, and several times
  the next namespace) while work waited in the queue far longer than usual: a
  noisy tenant holds the workers and the other tenants' changes wait;
- reconciles cancelled at their deadline while API calls are as fast as
  usual: the deadline is too tight for the work a reconcile has to do.

The order is that of cause and effect. A crash loop, a lost Lease or a slow
API server makes reconciles slow, retried and queued, so a busy namespace may
look noisy then, while it is a victim. A restart reconciles every object once
(its first list), so the namespace with the most objects dominates that
window: the restart explains it. A noisy tenant comes before a tight
deadline: reconciles crowding the workers (one event loop) run longer, and
the deadline they hit is the symptom; unless the namespace is alone, when
its queue waits on its own retries of reconciles cut short.

`Signals` is what the rules read; the drill fills it from the spans it
collected, `wukong diagnose` from a live cluster's Prometheus.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

SLOW_API = "slow_api_server"
TIGHT_DEADLINE = "deadline_too_tight"
LEADER_LOST = "leader_lost"
CRASH_LOOP = "crash_loop"
ROLLING_RESTART = "rolling_restart"
NOISY_TENANT = "noisy_tenant"
HEALTHY = "healthy"

# API calls this many times slower than the healthy baseline (and at least
# SLOW_API_FLOOR_MS) mean the API is the problem, not the deadline.
SLOW_API_FACTOR = 5.0
SLOW_API_FLOOR_MS = 50.0
# A process that started this many times in the window is crash-looping; one
# restart is what a lost Lease or a rollout does.
CRASH_LOOP_STARTS = 2

# One namespace with at least this share of the window's reconciles, and this
# many times the next namespace's, is the one holding the workers...
NOISY_SHARE = 0.5
NOISY_FACTOR = 3.0
# ... when there are enough reconciles to tell (a handful is no load) ...
NOISY_MIN_RECONCILES = 50
# ... and keys wait in the queue this many times their usual p99 (and at least
# QUEUE_WAIT_FLOOR_MS: a healthy queue hands a key out in milliseconds).
QUEUE_WAIT_FACTOR = 5.0
QUEUE_WAIT_FLOOR_MS = 1000.0

TIMED_OUT_REASONS = ("deadline_exceeded", "api_timeout")


@dataclass(frozen=True, kw_only=True)
class Signals:
    """What the rules read, over one window of time."""

    cancellations: Mapping[str, int]
    """Cancelled reconciles, by cancel reason."""
    api_p50_ms: float
    """Median API call latency in the window."""
    baseline_api_p50_ms: float
    """Median API call latency when healthy (0 when unknown)."""
    slowest_call: str | None = None
    slowest_call_p50_ms: float = 0.0
    leader_dropped: bool = False
    """A replica's leader status went to (or reads) 0 in the window."""
    restarts: Mapping[str, int] = field(default_factory=dict)
    """Process starts in the window beyond the first, by replica (pod)."""
    reconciles_by_namespace: Mapping[str, int] = field(default_factory=dict)
    """Reconciles in the window by the reconciled object's namespace (the top ones)."""
    queue_wait_p99_ms: float = 0.0
    """p99 of the time keys waited in the work queue in the window."""
    baseline_queue_wait_p99_ms: float = 0.0
    """p99 queue wait when healthy (0 when unknown)."""


@dataclass(frozen=True)
class Diagnosis:
    cause: str
    explanation: str

    @property
    def healthy(self) -> bool:
        return self.cause in (HEALTHY, ROLLING_RESTART)


def diagnose(signals: Signals) -> Diagnosis:
    """The dominant cause the signals show, with the sentence that says why."""
    cancellations = signals.cancellations
    leader_lost = cancellations.get("leader_lost", 0)
    shutdown = cancellations.get("shutdown", 0)
    timed_out = sum(cancellations.get(reason, 0) for reason in TIMED_OUT_REASONS)
    crashing = {pod: count for pod, count in signals.restarts.items() if count >= CRASH_LOOP_STARTS}
    if crashing:
        pods = ", ".join(f"{pod} x{count}" for pod, count in sorted(crashing.items()))
        return Diagnosis(
            CRASH_LOOP,
            f"operator processes restarted again and again ({pods}): a replica is "
            "crash-looping; read its previous log (kubectl logs --previous)",
        )
    if shutdown and not (leader_lost or timed_out):
        # A replica stopping hands its Lease over on purpose: its leader status
        # drops to 0 too, which is no loss.
        return Diagnosis(
            ROLLING_RESTART,
            f"no failure: {_reconciles(shutdown)} cancelled for shutdown, none timed out or "
            "lost the Lease; a restart or rollout, requeued by the next replica",
        )
    if leader_lost or signals.leader_dropped:
        seen = [f"{_reconciles(leader_lost)} cancelled with leader_lost"] if leader_lost else []
        if signals.leader_dropped:
            seen.append("a replica's leader_election_master_status dropped to 0")
        return Diagnosis(
            LEADER_LOST,
            "; ".join(seen) + ": a replica lost its Lease and stopped reconciling",
        )
    baseline = signals.baseline_api_p50_ms
    slow_threshold = max(SLOW_API_FLOOR_MS, SLOW_API_FACTOR * baseline)
    if timed_out and signals.api_p50_ms >= slow_threshold:
        slowest = (
            f"; slowest: {signals.slowest_call} (p50 {signals.slowest_call_p50_ms:.0f} ms)"
            if signals.slowest_call
            else ""
        )
        return Diagnosis(
            SLOW_API,
            f"{_reconciles(timed_out)} hit their deadline while API calls took "
            f"p50 {signals.api_p50_ms:.0f} ms against {_baseline(baseline)}"
            f"{slowest}: the API server is slow",
        )
    noisy = _noisy_tenant(signals, timed_out=timed_out)
    if noisy is not None:
        return noisy
    if not timed_out:
        return Diagnosis(HEALTHY, "no reconcile was cut short by a deadline")
    return Diagnosis(
        TIGHT_DEADLINE,
        f"{_reconciles(timed_out)} hit their deadline while API calls were as fast as "
        f"usual (p50 {signals.api_p50_ms:.0f} ms against {_baseline(baseline)}): "
        "the deadline is too tight for the work of one reconcile; raise --reconcile-timeout",
    )


def _noisy_tenant(signals: Signals, *, timed_out: int) -> Diagnosis | None:
    """A noisy tenant, when one namespace ran most reconciles while the queue backed up."""
    ranked = sorted(signals.reconciles_by_namespace.items(), key=lambda item: -item[1])
    total = sum(count for _, count in ranked)
    if not ranked or total < NOISY_MIN_RECONCILES:
        return None
    (namespace, count), *rest = ranked
    if not rest and timed_out:
        # Alone, its keys wait behind its own retries of reconciles cut short at their
        # deadline: no neighbour is crowded out, the deadline is the cause.
        return None
    runner_up = rest[0][1] if rest else 0
    if count < NOISY_SHARE * total or count < NOISY_FACTOR * runner_up:
        return None
    baseline = signals.baseline_queue_wait_p99_ms
    if signals.queue_wait_p99_ms < max(QUEUE_WAIT_FLOOR_MS, QUEUE_WAIT_FACTOR * baseline):
        return None
    next_one = f"; next: {rest[0][0]} {runner_up / total:.0%}" if rest else ""
    return Diagnosis(
        NOISY_TENANT,
        f"namespace {namespace} ran {count / total:.0%} of the reconciles ({count} of "
        f"{total}{next_one}) while the queue's p99 wait was {signals.queue_wait_p99_ms:.0f} ms "
        f"against {_baseline(baseline, QUEUE_WAIT_FLOOR_MS)}: a noisy tenant holds the "
        "workers and the other namespaces' changes wait; find what changes its objects so "
        f"often (kubectl get events -n {namespace}) or lower "
        "--max-concurrent-reconciles-per-namespace",
    )


def _baseline(baseline_ms: float, floor_ms: float = SLOW_API_FLOOR_MS) -> str:
    if baseline_ms:
        return f"{baseline_ms:.0f} ms when healthy"
    return f"no healthy baseline, a {floor_ms:.0f} ms floor"


def _reconciles(count: int) -> str:
    """ "1 reconcile", "3 reconciles": the report reads as a sentence."""
    return f"{count} reconcile" if count == 1 else f"{count} reconciles"
