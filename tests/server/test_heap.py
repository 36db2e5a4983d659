"""server/heap.py: the daemon's heap is frozen once it is ready, with garbage collected first and full
collections spaced out, and all of it undone at stop (tests and embedders run many daemons in one process)."""

from __future__ import annotations

import gc
import weakref

from falconet.server import heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_settle_collects_cycles_then_freezes_what_is_alive_and_release_undoes_it() -> None:
    original = gc.get_threshold()
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the cyclic collector frees it
    dead = weakref.ref(a)
    del a, b
    kept = Node()
    before = heap.settle()
    try:
        assert dead() is None, "the garbage cycle was frozen instead of collected"
        assert before == original
        assert gc.get_freeze_count() > 0
        assert not any(o is kept for o in gc.get_objects()), "a frozen object is in no generation"
        assert gc.get_threshold() == (original[0], original[1], max(original[2], heap.FULL_EVERY))
    finally:
        heap.release(before)
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == original
    assert any(o is kept for o in gc.get_objects())


def test_a_second_settle_unfreezes_first_so_garbage_left_frozen_is_collected() -> None:
    """A reload settles again: what the old rules left in cycles (frozen at the first settle) is freed."""
    before = heap.settle()
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a
        dead = weakref.ref(a)
        heap.settle()  # frozen while still referenced
        del a, b
        gc.collect()
        assert dead() is not None, "frozen objects are never collected"
        heap.settle()
        assert dead() is None
    finally:
        heap.release(before)
