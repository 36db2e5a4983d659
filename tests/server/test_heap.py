"""server/heap.py: the daemon's heap is frozen once it is ready, with garbage collected first and full
collections spaced out, and all of it undone at stop (tests and embedders run many daemons in one process)."""

from __future__ import annotations

import gc
import weakref

from falconet.model.alert import Alert, Priority
from falconet.server import heap
from falconet.server.hub import Hub


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
        assert gc.get_threshold() == (
            original[0], min(original[1], heap.YOUNG_EVERY), max(original[2], heap.FULL_EVERY)
        )
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


def test_young_collections_stay_small_while_a_full_ring_turns_over() -> None:
    """The latency stall of session 7 (bench/RESULTS.md, "latstall"): every published alert stays in the hub's
    ring, so it survives generation 0 and is walked by a generation-1 collection, with every thread stopped.
    Once the ring is full each new alert frees an old one, which slows generation 0's allocation clock, and with
    CPython's default pace (a generation-1 collection about every 12th) one came to hold thousands of alerts.
    After `settle`, no generation-1 collection may start with more than a few generation-0 windows of objects.
    (Objects counted, not time: the pause is the walk, and the walk is proportional to the objects.)"""
    hub = Hub(retention=10_000, hostname="test-host")  # the daemon's default
    walked: list[int] = []

    def census(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 1:
            walked.append(len(gc.get_objects(0)) + len(gc.get_objects(1)))

    before = heap.settle()
    gc.callbacks.append(census)
    try:
        for i in range(40_000):  # four times round the ring
            hub.publish(Alert(
                time_ns=i, rule="Read sensitive file", priority=Priority.WARNING, source="syscall",
                output=f"opened by {i}", output_fields={"proc.cmdline": f"cat {i}", "fd.name": "/etc/shadow"},
                tags=["filesystem", "mitre_credential_access"],
            ))
    finally:
        gc.callbacks.remove(census)
        heap.release(before)
    window = before[0]
    assert walked, "no generation-1 collection at all: the test's load is too small to show anything"
    assert max(walked) <= 4 * window, (
        f"a generation-1 collection walked {max(walked)} objects (generation 0 is collected every {window} "
        f"net allocations): young collections are not kept small"
    )
