"""Benchmark results as fragments that `bench/report.py` assembles into RESULTS.md.

Each benchmark prints its numbers and also writes `bench/.results/<name>.json`:
a title, a markdown table (header + rows) and notes. Fragments from one
`make bench` run are collected into one report with the machine and versions.
"""

import json
import math
import statistics
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / ".results"


def write_fragment(
    name: str,
    *,
    title: str,
    header: list[str],
    rows: list[list[str]],
    notes: list[str],
    source: str | None = None,
) -> Path:
    """`source`: what measured it, when not `bench/<name>.py` (a test, say)."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    fragment: dict[str, object] = {"title": title, "header": header, "rows": rows, "notes": notes}
    if source is not None:
        fragment["source"] = source
    path.write_text(json.dumps(fragment, indent=2) + "\n")
    return path


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """The table a fragment holds, on stdout as `a | b | c` lines."""
    for row in (header, *rows):
        print(" | ".join(row))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    """`median (min-max)` of `values`, each formatted with `fmt`."""
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{fmt.format(mid)} ({fmt.format(low)}-{fmt.format(high)})"


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """The interval holding the median of what `values` were drawn from with at least
    `confidence`, from their order alone (no assumption on their distribution): the
    j-th smallest to the j-th largest, j the largest for which fewer than j of n
    draws fall below the median with probability at most (1 - confidence) / 2.
    With too few values for that, their min and max."""
    ordered = sorted(values)
    n = len(ordered)
    below = 0.0  # P(fewer than j of the n draws fall below the median), Binomial(n, 1/2)
    j = 0
    while j < n // 2:
        below += math.comb(n, j) / 2**n
        if below > (1 - confidence) / 2:
            break
        j += 1
    j = max(j, 1)
    return ordered[j - 1], ordered[n - j]


def versus(ours: list[float], theirs: list[float], fmt: str = "{:.2f}") -> str:
    """The peer's median, then ours/theirs taken within each round as `median (min-max)`.

    `ours[i]` and `theirs[i]` come from the same round.
    """
    ratios = [a / b if b else float("nan") for a, b in zip(ours, theirs, strict=True)]
    return f"{fmt.format(statistics.median(theirs))}; x{spread(ratios)}"
