"""Freezing the start-up heap: garbage collected first, the living frozen, once."""

import gc
import weakref
from collections.abc import Iterator

import pytest

from wukong.runtime._heap import HeapFreezer


class Node:
    def __init__(self) -> None:
        self.peer: Node | None = None


@pytest.fixture
def unfreeze() -> Iterator[None]:
    yield
    gc.unfreeze()  # give the test process its collector back


def tracked(obj: object) -> bool:
    """Whether the collector still walks `obj` (frozen objects are not in its generations)."""
    return any(o is obj for o in gc.get_objects())


def test_collects_garbage_first_then_freezes_what_lives(unfreeze: None) -> None:
    cycle = Node()
    cycle.peer = Node()
    cycle.peer.peer = cycle
    dead = weakref.ref(cycle)
    del cycle  # unreachable, but only the cyclic collector can free it
    alive = Node()
    assert dead() is not None and tracked(alive)

    assert HeapFreezer().freeze_once()

    assert dead() is None  # collected, not frozen for ever
    assert not tracked(alive)  # frozen: no collection walks it again
    assert gc.get_freeze_count() > 0


def test_freezes_only_the_first_time(unfreeze: None) -> None:
    freezer = HeapFreezer()
    assert freezer.freeze_once()
    later = Node()
    assert not freezer.freeze_once()
    assert tracked(later)  # allocated after start-up: collected as usual
