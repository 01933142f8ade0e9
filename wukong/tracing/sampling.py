"""Which reconciles keep their trace: decided when the reconcile ends.

Every cancelled, failed or slow reconcile is kept (slow: it used more than
`slow_share` of its deadline's budget); of the others, `keep_ratio` are kept,
chosen by trace id (the low 64 bits, as the SDK's `TraceIdRatioBased` reads
them), so the choice is the same wherever the trace id is seen.

Settings come from the environment the chart sets:
`WUKONG_TRACES_KEEP_RATIO` (default 0.01) and `WUKONG_TRACES_SLOW_SHARE`
(default 0.5). A plain reconcile's kept trace costs about half its CPU again
(its spans made and exported: bench/RESULTS.md), so the default keeps 1 % of
them; the traces an SRE looks for (cancelled, failed, slow) are all kept.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass

_ID_SPACE = 1 << 64
_LOW_BITS = _ID_SPACE - 1  # the low 64 bits of a trace id

DEFAULT_KEEP_RATIO = 0.01
DEFAULT_SLOW_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class TailSampling:
    """What to keep of reconciles that ended well and in time (`keep_ratio`), and
    when one is slow (`slow_share` of its budget used). Failures are always kept."""

    keep_ratio: float = 1.0
    slow_share: float = DEFAULT_SLOW_SHARE

    def __post_init__(self) -> None:
        if not 0.0 <= self.keep_ratio <= 1.0:
            raise ValueError(f"keep ratio {self.keep_ratio} is not between 0 and 1")
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
        """The operator's settings: defaults keep 1 % of plain reconciles."""
        return cls(
            keep_ratio=float(environ.get("WUKONG_TRACES_KEEP_RATIO") or DEFAULT_KEEP_RATIO),
            slow_share=float(environ.get("WUKONG_TRACES_SLOW_SHARE") or DEFAULT_SLOW_SHARE),
        )


def sampled_by_ratio(trace_id: int, bound: int) -> bool:
    """Whether a plain reconcile of `trace_id` is among the ratio kept (`bound`:
    `TailSampling.bound`)."""
    return (trace_id & _LOW_BITS) < bound
