"""A list page decoded one object at a time gives what `json.loads` gives, and stops
at a fault with the objects before it handed out."""

import json
from typing import Any

import pytest

from wukong.runtime._listpage import ListPage

ITEMS = [
    {"metadata": {"name": f"w-{i}", "labels": {"a": "b"}}, "spec": {"x": [1, 2.5, None, True]}}
    for i in range(3)
]


def decoded(text: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    page = ListPage(text)
    items = list(page.items())
    return page.fields, items


@pytest.mark.parametrize("indent", [None, 2])
def test_a_page_decodes_as_json_loads_does(indent: int | None) -> None:
    whole = {
        "kind": "WukongList",
        "apiVersion": "wukong.io/v1",
        "metadata": {"resourceVersion": "7", "continue": "c", "remainingItemCount": 3},
        "items": ITEMS,
        "shardInfo": {"selector": "shardRange(...)"},
    }
    fields, items = decoded(json.dumps(whole, indent=indent))
    assert items == ITEMS
    assert fields == {key: value for key, value in whole.items() if key != "items"}


def test_members_before_and_after_the_items() -> None:
    page = ListPage('{"metadata": {"resourceVersion": "1"}, "items": [], "kind": "List"}')
    assert page.metadata == {"resourceVersion": "1"}
    assert "kind" not in page.fields  # after `items`: read once they are
    assert list(page.items()) == []
    assert page.fields["kind"] == "List"


def test_sorted_members_as_custom_resources_lists_have_them_are_read_lazily() -> None:
    # apiVersion, items, kind, metadata: `metadata` is read from the end first, and
    # the objects one at a time after (the second one here is malformed).
    text = (
        '{"apiVersion": "wukong.io/v1", "items": [{"a": 1}, {"b" 2}], "kind": "WukongList",'
        ' "metadata": {"resourceVersion": "3", "continue": "c"}}'
    )
    page = ListPage(text)
    assert page.metadata == {"resourceVersion": "3", "continue": "c"}
    items = page.items()
    assert next(items) == {"a": 1}
    with pytest.raises(json.JSONDecodeError, match="Expecting ':' delimiter"):
        next(items)


def test_sorted_members_decode_as_json_loads_does() -> None:
    whole = {"apiVersion": "v1", "items": ITEMS, "kind": "List", "metadata": {"a": {"b": "}"}}}
    page = ListPage(json.dumps(whole, sort_keys=True, indent=1))
    assert page.metadata == whole["metadata"]
    assert list(page.items()) == ITEMS
    assert page.fields == {key: value for key, value in whole.items() if key != "items"}


def test_items_before_a_metadata_not_last_are_decoded_whole_so_metadata_comes_first() -> None:
    text = json.dumps({"items": ITEMS, "metadata": {"resourceVersion": "2"}, "kind": "List"})
    page = ListPage(text)
    assert page.metadata == {"resourceVersion": "2"}
    assert list(page.items()) == ITEMS
    # A last member that looks like `metadata` but is an object's, not the page's.
    text = json.dumps({"items": [{"metadata": {"name": "a"}}]})
    page = ListPage(text)
    with pytest.raises(json.JSONDecodeError, match="metadata"):
        page.metadata  # noqa: B018
    assert list(page.items()) == [{"metadata": {"name": "a"}}]


@pytest.mark.parametrize(
    "text", ['{"metadata": {}, "items": null}', '{"metadata": {}}', ' {"metadata":{},"items":[ ]} ']
)
def test_no_items(text: str) -> None:
    assert decoded(text) == ({"metadata": {}}, [])


def test_objects_are_decoded_as_they_are_reached() -> None:
    text = json.dumps({"metadata": {}, "items": ITEMS})
    items = ListPage(text[: text.index('"w-2"')]).items()  # truncated in the third object
    assert next(items) == ITEMS[0]
    assert next(items) == ITEMS[1]
    with pytest.raises(json.JSONDecodeError, match=r"Unterminated string|Expecting"):
        next(items)


@pytest.mark.parametrize(
    ("text", "before_the_fault", "error"),
    [
        ('{"metadata":{},"items":[{"a":1},{"b"', [{"a": 1}], "Expecting ':' delimiter"),
        ('{"metadata":{},"items":[{"a":1}] ', [{"a": 1}], "Expecting ',' delimiter or '}'"),
        ('{"metadata":{},"items":[{"a":1}]}]', [{"a": 1}], "Extra data"),
        ('{"metadata":{},"items":[{"a":1} {"b":2}]}', [{"a": 1}], "Expecting ',' delimiter or ']'"),
        ('{"metadata":{},"items":{}}', [], "Expecting '\\['"),
        ('{"items":{},"metadata":{}}', [], "Expecting '\\['"),
        ('{"items":{},"metadata":{},"kind":"x"}', [], "Expecting 'items' to be an array"),
        ('{"metadata":{},"items":[1],"items":[2]}', [1], "Expecting one 'items' member"),
        ('{"metadata":{},"items":[', [], "Expecting value"),
        ("", [], "Expecting '{'"),
        ("[]", [], "Expecting '{'"),
        ('{"metadata" {}}', [], "Expecting ':' delimiter"),
        ("{metadata: {}}", [], "Expecting property name"),
    ],
)
def test_a_malformed_page_raises_after_the_objects_before_its_fault(
    text: str, before_the_fault: list[Any], error: str
) -> None:
    handed_out: list[Any] = []
    with pytest.raises(json.JSONDecodeError, match=error):
        handed_out.extend(ListPage(text).items())
    assert handed_out == before_the_fault


def test_a_page_without_metadata_says_so() -> None:
    page = ListPage('{"items": []}')
    with pytest.raises(json.JSONDecodeError, match="metadata"):
        page.metadata  # noqa: B018
