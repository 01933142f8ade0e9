"""`wukong trace`: a live table of who cancels what on this node, like `top`."""

import json
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict
from typing import TextIO

from wukong.ebpf.records import Cancellation

SORT_KEYS = ("count", "pid", "reason", "pod")


class LiveTable:
    """Counts per (pid, runtime, reason, where); renders them sorted, most first."""

    def __init__(self, *, sort: str = "count", limit: int = 25) -> None:
        self.sort = sort
        self.limit = limit
        self.rows: Counter[tuple[int, str, str, str, str, str]] = Counter()
        self.total = 0

    def add(self, cancellation: Cancellation) -> None:
        pod = f"{cancellation.namespace}/{cancellation.pod}" if cancellation.pod else "-"
        key = (
            cancellation.pid,
            cancellation.comm,
            pod,
            cancellation.runtime,
            cancellation.reason,
            cancellation.where or "-",
        )
        self.rows[key] += cancellation.count
        self.total += cancellation.count

    def render(
        self,
        *,
        seconds: float,
        targets: int,
        notices: list[str],
        lost: int = 0,
        losses: Mapping[str, int] | None = None,
        untraced: Mapping[str, int] | None = None,
    ) -> str:
        """`lost`: cancellations missing from the counts; `losses` and `untraced`:
        every loss and every process not traced, by reason."""
        order = {
            "count": lambda item: -item[1],
            "pid": lambda item: item[0][0],
            "reason": lambda item: (item[0][4], -item[1]),
            "pod": lambda item: (item[0][2], -item[1]),
        }[self.sort]
        warnings = [
            # A loss is shown, never hidden: the counts below are short by it.
            f"LOST {lost} events (probe buffers full): the counts below are short" if lost else "",
            _by_reason("lost", losses),
            _by_reason("not traced", untraced),
        ]
        lines = [
            f"wukong trace: {self.total} cancellations in {seconds:.0f}s, "
            f"{targets} processes traced (sorted by {self.sort}; Ctrl-C stops)",
            *(warning for warning in warnings if warning),
            "",
            f"{'COUNT':>6} {'PID':>7} {'COMMAND':<16} {'POD':<28} {'RUNTIME':<7} "
            f"{'REASON':<18} WHERE",
        ]
        for (pid, comm, pod, runtime, reason, where), count in sorted(self.rows.items(), key=order)[
            : self.limit
        ]:
            lines.append(
                f"{count:>6} {pid:>7} {comm[:16]:<16} {pod[:28]:<28} {runtime:<7} "
                f"{reason:<18} {where}"
            )
        lines += ["", *notices[-5:]]
        return "\n".join(lines)


def _by_reason(what: str, counts: Mapping[str, int] | None) -> str:
    """ "lost: ring_buffer_full 3, perf_buffer 1", or "" when there is nothing to say."""
    said = ", ".join(f"{reason} {n}" for reason, n in sorted((counts or {}).items()) if n)
    return f"{what}: {said}" if said else ""


def write_json(cancellation: Cancellation, stream: TextIO = sys.stdout) -> None:
    stream.write(json.dumps(asdict(cancellation)) + "\n")
    stream.flush()
