"""The daemon and CPython's cyclic garbage collector: why the heap is frozen once the daemon is ready.

A full (generation 2) collection stops every Python thread while it walks every tracked object. At 10,000
alerts/s (`python -m bench.daemon_latency`) one ran every 0.5-2 s on the engine thread and took 33-55 ms: the
rules engine, bcc's objects and the tables loaded at start-up (about 80,000 objects) plus the hub's ring of
recent alerts. Those walks were the syscall-to-subscriber latency's periodic stall (p50 0.5 ms, p99 18-37 ms;
bench/RESULTS.md, "latloss"), and almost pure waste: what the daemon allocates once it runs rarely forms a
reference cycle (a full collection frees a few dozen objects), so reference counting frees nearly everything.

So, once the daemon is ready (and again after a reload swapped in new rules): one collection, then
`gc.freeze()`, which moves every object alive into a permanent generation that no collection walks; and full
collections only after FULL_EVERY younger ones (CPython's default is 10).

Young collections were the next stall (bench/RESULTS.md, "latstall"). Every published alert is a handful of
tracked objects kept by the hub's ring (the alert, its cursor, its entry, its tags), so each one survives
generation 0 and is walked again by the next generation-1 collection, which CPython runs about every 12th
collection. Generation 0 is paced by allocations minus deallocations, and once the ring is full each new alert
frees an evicted one, so those windows grow: a generation-1 collection came to hold up to ~7,800 alerts
(~39,000 objects), 7-11 ms with every thread stopped, about twice per 3-second round at 10,000 alerts/s. With
YOUNG_EVERY every third collection is a generation-1 one: the same objects, the same total work, walked in
slices of three generation-0 windows (longest pause about 2 ms there).

The price: cyclic garbage among frozen objects is never collected. `settle` unfreezes before it collects, so
what a reload leaves behind (the old rules, if they hold cycles) is freed at the next settle rather than kept
for ever; `release` undoes both settings when the daemon stops (tests run many daemons in one process).
"""

from __future__ import annotations

import gc

FULL_EVERY = 5000
"""Generation-1 collections between two full ones (CPython's default: 10). At 10,000 alerts/s a generation-1
collection runs about 13 times a second (with YOUNG_EVERY), so a full one comes every few minutes instead of
every second."""
YOUNG_EVERY = 1
"""CPython's generation-1 threshold (default 10): a generation-1 collection runs once more generation-0 ones than
this ran since the last."""


def settle() -> tuple[int, int, int]:
    """Collects everything unreachable, freezes what is left, keeps young collections small and spaces full
    collections out; returns the thresholds before, for `release`. Call it when the heap holds what the daemon
    will keep (ready, reloaded): it pauses every thread for one full collection (tens of ms), once."""
    before = gc.get_threshold()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    gc.set_threshold(before[0], min(before[1], YOUNG_EVERY), max(before[2], FULL_EVERY))
    return before


def release(before: tuple[int, int, int]) -> None:
    """Undoes `settle`: the frozen objects are collectable again and the thresholds are as they were."""
    gc.unfreeze()
    gc.set_threshold(*before)
