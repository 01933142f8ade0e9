"""Kubernetes quantities: every suffix to its value in base units, ordered across suffixes."""

from decimal import Decimal

import pytest

from wukong.runtime import parse_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("10Gi", Decimal(10 * 2**30)),
        ("500M", Decimal(500 * 10**6)),
        ("1.5e3", Decimal(1500)),
        ("100m", Decimal("0.1")),
        ("2", Decimal(2)),
    ],
)
def test_quantities(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_quantity_order_across_suffixes() -> None:
    assert parse_quantity("1Gi") > parse_quantity("1G")
    assert parse_quantity("1024Mi") == parse_quantity("1Gi")
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity("lots")
