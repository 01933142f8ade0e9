"""Label selectors as the API server reads them, and what is no selector."""

import pytest

from wukong.runtime._labels import parse_selector


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("app=web", {"app": "web"}, True),
        ("app==web,tier!=db", {"app": "web", "tier": "db"}, False),
        ("tier in (db, cache)", {"tier": "cache"}, True),
        ("tier notin (db)", {}, True),
        ("app,!legacy", {"app": "x"}, True),
        ("!app", {"app": "x"}, False),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(selector)(labels) is expected


def test_malformed_selector_is_an_error() -> None:
    with pytest.raises(ValueError, match="invalid label selector"):
        parse_selector("a in b")
