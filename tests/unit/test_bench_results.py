"""The interval `bench/results.py` gives for a median: the order statistics a
binomial table gives, whatever the values' distribution."""

import importlib.util
import math
import random
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_results", Path(__file__).resolve().parents[2] / "bench" / "results.py"
)
assert _spec is not None and _spec.loader is not None
results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(results)


@pytest.mark.parametrize(
    ("n", "rank"),
    # The rank of the lower end (1-based) in published tables of the median's 95 %
    # confidence interval by order statistics; the upper end is n + 1 - rank.
    [(6, 1), (9, 2), (15, 4), (20, 6), (50, 18), (100, 40)],
)
def test_the_interval_is_the_tables_order_statistics(n: int, rank: int) -> None:
    values = [float(i) for i in range(1, n + 1)]
    random.Random(n).shuffle(values)  # from the order of the values, not of the list
    assert results.median_interval(values) == (rank, n + 1 - rank)


def test_its_coverage_is_at_least_the_confidence_asked() -> None:
    for n in (6, 15, 31, 100, 301):
        low, _ = results.median_interval([float(i) for i in range(1, n + 1)])
        j = int(low)
        outside = 2 * sum(math.comb(n, k) for k in range(j)) / 2**n
        assert outside <= 0.05
        # and the next order statistic in would not be
        assert 2 * sum(math.comb(n, k) for k in range(j + 1)) / 2**n > 0.05


def test_too_few_values_give_their_range() -> None:
    assert results.median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0)
    assert results.median_interval([5.0]) == (5.0, 5.0)
