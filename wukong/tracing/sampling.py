"""Which reconciles keep their trace: decided when the reconcile ends.

Every cancelled, failed or slow reconcile is kept (slow: it used more than
`slow_share` of its deadline's budget); of the others, `keep_ratio` are kept,
chosen by trace id (the low 64 bits, as the SDK's `TraceIdRatioBased` reads
them), so the choice is the same wherever the trace id is seen; and, whatever
the ratio, one a controller at least every `keep_every` seconds (`KeptTraces`).

Settings come from the environment the chart sets:
`WUKONG_TRACES_KEEP_RATIO` (default 0.001), `WUKONG_TRACES_KEEP_EVERY`
(seconds, default 60; 0: no floor) and `WUKONG_TRACES_SLOW_SHARE` (default
0.5). A plain reconcile's kept trace costs about half its CPU again (its spans
made and exported: bench/RESULTS.md), so the default keeps 1 in 1,000 of them,
Jaeger's default sampling probability
(jaegertracing.io/docs/sampling), with a floor so that a quiet controller still
shows what a normal reconcile of its looks like, as Jaeger's guaranteed-
throughput sampler sets a floor under its ratio. The traces an SRE looks for
(cancelled, failed, slow) are all kept.
"""

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from wukong.runtime.observe import Outcome

_ID_SPACE = 1 << 64
_LOW_BITS = _ID_SPACE - 1  # the low 64 bits of a trace id

DEFAULT_KEEP_RATIO = 0.001
DEFAULT_KEEP_EVERY = 60.0
DEFAULT_SLOW_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class TailSampling:
    """What to keep of reconciles that ended well and in time (`keep_ratio`), and
    when one is slow (`slow_share` of its budget used). Failures are always kept."""

    keep_ratio: float = 1.0
    slow_share: float = DEFAULT_SLOW_SHARE
    # At least one plain trace a controller this often (seconds), whatever the
    # ratio; 0: no floor.
    keep_every: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.keep_ratio <= 1.0:
            raise ValueError(f"keep ratio {self.keep_ratio} is not between 0 and 1")
        if not 0.0 <= self.keep_every < math.inf:
            raise ValueError(f"keep every {self.keep_every} s: not a number of seconds >= 0")
        if not 0.0 < self.slow_share:
            raise ValueError(f"slow share {self.slow_share} must be positive")

    @property
    def bound(self) -> int:
        """Trace ids whose low 64 bits are below this are kept when nothing else keeps them."""
        return round(self.keep_ratio * _ID_SPACE)

    def is_slow(self, elapsed: float, timeout: float) -> bool:
        return elapsed > self.slow_share * timeout

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> "TailSampling":
        """The operator's settings: defaults keep 1 in 1,000 plain reconciles, and one
        a controller at least every minute."""
        return cls(
            keep_ratio=float(environ.get("WUKONG_TRACES_KEEP_RATIO") or DEFAULT_KEEP_RATIO),
            slow_share=float(environ.get("WUKONG_TRACES_SLOW_SHARE") or DEFAULT_SLOW_SHARE),
            keep_every=float(environ.get("WUKONG_TRACES_KEEP_EVERY") or DEFAULT_KEEP_EVERY),
        )


def sampled_by_ratio(trace_id: int, bound: int) -> bool:
    """Whether a plain reconcile of `trace_id` is among the ratio kept (`bound`:
    `TailSampling.bound`)."""
    return (trace_id & _LOW_BITS) < bound


class KeptTraces:
    """Whether each reconcile's trace is kept, and why (`wukong.trace.kept`), decided
    as it ends: every cancelled, failed or slow one; of the plain ones (ended well
    and in time) `keep_ratio` by trace id, and one of a controller's when none of
    its was kept for `keep_every` seconds (its first reconcile starts that clock).
    One call a reconcile: what a dropped one costs is a few comparisons and a
    dict look-up.
    """

    def __init__(self, sampling: TailSampling) -> None:
        self._sampling = sampling
        self._bound = sampling.bound
        self._every = sampling.keep_every
        self._due: dict[str, float] = {}  # controller -> when a plain trace is due

    def why(
        self,
        outcome: Outcome,
        duration: float,
        timeout: float,
        trace_id: int,
        controller: str,
        started: float,
    ) -> str | None:
        """Why the trace of a reconcile of `controller` is kept: it ended with
        `outcome` after `duration` of its `timeout` (seconds), began at `started`
        (the event loop's clock), has `trace_id`. `cancelled`, `error`, `slow`,
        `sampled` (the ratio), `interval` (the floor); None: dropped."""
        if outcome is Outcome.CANCELLED:
            return "cancelled"
        if outcome is Outcome.ERROR:
            return "error"
        if self._sampling.is_slow(duration, timeout):
            return "slow"
        every = self._every
        if sampled_by_ratio(trace_id, self._bound):
            if every:
                self._due[controller] = started + every
            return "sampled"
        if not every:
            return None
        due = self._due.get(controller)
        if due is not None and started < due:
            return None
        self._due[controller] = started + every
        return None if due is None else "interval"
