"""A LIST answer decoded one listed object at a time, not whole.

A page decoded whole (`json.loads`) is every object of the page as Python dicts
and strings at once: about 15 KB a Wukong, most of it blocks of 512 bytes or
less, which come from Python's own allocator. Its arenas go back to the system
only when wholly empty, and what is kept meanwhile (the cache's keys) pins
them: a process that listed a page keeps that page's high-water for life.

`ListPage` walks the top level of the answer's JSON text itself and decodes
each member's value where it starts (`json.JSONDecoder.raw_decode`); the
`items` array is decoded one element at a time as `items()` is iterated, so
next to the text (one block, from the C allocator) only the object in hand is
decoded. The members before `items` are decoded when the page is made, those
after it once `items()` is exhausted; `metadata` is known before any object is
handed out, whatever the order. Built-in kinds' lists write it before `items`
(`kind`, `apiVersion`, `metadata`, `items`); custom resources' lists write their
members sorted (`apiVersion`, `items`, `kind`, `metadata`), so there it is read
first from the end of the text, as the last member. Should `items` come before a
`metadata` that is not the last member, `items` is decoded whole.

A malformed or truncated text raises `json.JSONDecodeError`, as `json.loads`
would, but only once iteration reaches the fault: the objects before it have
been handed out already, and the page's `metadata` (its `continue` and
`resourceVersion`) is never half-read.
"""

import json
import re
from collections.abc import Iterator

from wukong.runtime._transport import Object

_DECODER = json.JSONDecoder()
_WHITESPACE = re.compile(r"[ \t\n\r]*")


class ListPage:
    """One LIST answer's JSON text, decoded as it is read."""

    def __init__(self, text: str) -> None:
        self._text = text
        # The top-level members decoded so far, but `items`.
        self.fields: Object = {}
        self._eager: list[Object] = []  # `items`, decoded whole (before a `metadata` not last)
        # Where `items`'s value starts, not yet read (None: no such value left to read).
        self._items_at = self._members(self._expect(_skip(text, 0), "{"), first=True)

    @property
    def metadata(self) -> Object:
        """The page's ListMeta (`continue`, `resourceVersion`, `shardInfo`...)."""
        metadata = self.fields.get("metadata")
        if not isinstance(metadata, dict):
            raise json.JSONDecodeError("Expecting a 'metadata' object", self._text, 0)
        return metadata

    def items(self) -> Iterator[Object]:
        """The listed objects, each decoded when reached; then the members after `items`.

        Iterate once: the text is read forward only.
        """
        eager, self._eager = self._eager, []
        yield from eager
        del eager
        pos, self._items_at = self._items_at, None
        if pos is None:
            return
        text = self._text
        if text.startswith("null", pos):
            pos += 4
        else:
            pos = _skip(text, self._expect(pos, "["))
            if text.startswith("]", pos):
                pos += 1
            else:
                while True:
                    item, pos = _DECODER.raw_decode(text, pos)
                    yield item
                    del item  # gone before the next one is decoded
                    pos = _skip(text, pos)
                    if text.startswith("]", pos):
                        pos += 1
                        break
                    pos = _skip(text, self._expect(pos, ",", "',' delimiter or ']'"))
        if self._members(pos, first=False) is not None:
            raise json.JSONDecodeError("Expecting one 'items' member", text, pos)

    def _members(self, pos: int, *, first: bool) -> int | None:
        """Decode top-level members from `pos` (after `{`, or after a member's value).

        Returns where `items`'s value starts once reached with `metadata` known;
        None at the closing `}` (the end of the text, else an error).
        """
        text = self._text
        while True:
            pos = _skip(text, pos)
            if text.startswith("}", pos):
                if _skip(text, pos + 1) != len(text):
                    raise json.JSONDecodeError("Extra data", text, pos + 1)
                return None
            if not first:
                pos = _skip(text, self._expect(pos, ",", "',' delimiter or '}'"))
            first = False
            if not text.startswith('"', pos):
                raise json.JSONDecodeError("Expecting property name", text, pos)
            key, pos = _DECODER.raw_decode(text, pos)
            pos = _skip(text, self._expect(_skip(text, pos), ":", "':' delimiter"))
            if key == "items" and "metadata" not in self.fields:
                last = self._metadata_as_last_member()
                if last is not None:
                    self.fields["metadata"] = last  # decoded again, in its turn
            if key == "items" and "metadata" in self.fields:
                return pos
            value, pos = _DECODER.raw_decode(text, pos)
            if key != "items":
                self.fields[key] = value
            elif value is None or isinstance(value, list):
                self._eager = value or []
            else:
                raise json.JSONDecodeError("Expecting 'items' to be an array", text, pos)

    def _metadata_as_last_member(self) -> Object | None:
        """The top level's `metadata` when it is the text's last member, else None.

        The last `"metadata"` key of the text, its value closed by the text's last
        `}`: the top-level object's last member. A quote after a `,` is never inside
        a string (one there would be escaped).
        """
        text = self._text
        at = text.rfind('"metadata"')
        before = at - 1
        while before >= 0 and text[before] in " \t\n\r":
            before -= 1
        if at < 0 or before < 0 or text[before] != ",":
            return None
        pos = _skip(text, at + len('"metadata"'))
        if not text.startswith(":", pos):
            return None
        try:
            value, pos = _DECODER.raw_decode(text, _skip(text, pos + 1))
        except json.JSONDecodeError:
            return None
        pos = _skip(text, pos)
        if not isinstance(value, dict) or not text.startswith("}", pos):
            return None
        return value if _skip(text, pos + 1) == len(text) else None

    def _expect(self, pos: int, char: str, what: str | None = None) -> int:
        if not self._text.startswith(char, pos):
            raise json.JSONDecodeError(f"Expecting {what or repr(char)}", self._text, pos)
        return pos + 1


def _skip(text: str, pos: int) -> int:
    """The position of the first non-whitespace character from `pos`."""
    match = _WHITESPACE.match(text, pos)
    assert match is not None  # `*` matches the empty string
    return match.end()
